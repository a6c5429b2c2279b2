"""A campaign's state mirrored in a real redis-server: a campaign resumed where the state file
is missing (another machine of the cluster) calls nobody twice."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from ivr.campaign.manager import CampaignSpec, build_runner
from ivr.config import ClusterSettings, PbxSettings, Route, WorkerConfig
from ivr.speech.services import SpeechServices
from ivr.worker.runner import Worker

SECRET = "campaign-redis-secret"


async def test_a_campaign_resumes_from_redis_when_its_state_file_is_gone(emulator_factory, redis_server, tmp_path):
    emu = await emulator_factory(client_secret=SECRET, extensions={"101": "answer", "102": "answer"})
    (tmp_path / "in.yaml").write_text("steps: [answer, hangup]\n")
    (tmp_path / "out.yaml").write_text("steps:\n  - say: hi\n  - hangup\n")
    (tmp_path / "list.csv").write_text("number\n101\n102\n")
    config = WorkerConfig(pbx=PbxSettings(url=emu.url, client_id="900"), records=None, base_dir=tmp_path,
                          routes=[Route(route_point="800", flow=str(tmp_path / "in.yaml"))],
                          cluster=ClusterSettings(redis_url=redis_server.url))
    speech = SpeechServices.from_settings(config.speech.model_copy(update={"tts": "tone"}))
    worker = Worker(config, secret=SecretStr(SECRET), reload_interval=60, speech=speech)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.ready.wait(), 20)
        spec = CampaignSpec(contacts="list.csv", flow="out.yaml", rate=20, retries=0)
        first = await build_runner(worker, spec)
        assert (await first.run())["answered"] == 2
        dialled = len(emu.controller.list_calls())
        (tmp_path / "list.state.json").unlink()  # this machine never saw the campaign
        again = await build_runner(worker, spec)
        assert again.plan.finished and again.plan.counts()["answered"] == 2
        await again.run()
        assert len(emu.controller.list_calls()) == dialled  # nobody called twice
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
