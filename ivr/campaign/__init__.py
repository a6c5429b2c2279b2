"""Outbound campaigns: call lists, pacing, calling windows, retries, results (docs/campaigns.md).

``contacts``, ``window`` and ``plan`` are pure (time is passed in); the runner drives them.
"""
