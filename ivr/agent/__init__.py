"""The ``agent`` step: an LLM voice conversation inside a flow (docs/agent.md).

``await call.agent(system=..., greeting=..., tools=AgentTools(transfer={"sales": "101"}))``
returns an :class:`AgentResult`. Modules: ``loop`` (turn taking, barge-in, limits),
``speaker`` (streamed replies and what was heard), ``sentences`` (LLM text -> sentences),
``tools`` (declarations, argument checks, execution), ``metrics`` (per-turn latency).
"""

from .loop import AgentLoop, AgentSettings, run_agent
from .metrics import TurnMetrics
from .result import STATUSES, AgentResult, AgentStatus
from .sentences import SentenceSplitter, speakable
from .tools import AgentTools, HttpTool, ParamSpec, ReturnTool, ToolArgumentError, ToolBox, validate_arguments

__all__ = [
    "STATUSES", "AgentLoop", "AgentResult", "AgentSettings", "AgentStatus", "AgentTools", "HttpTool", "ParamSpec",
    "ReturnTool", "SentenceSplitter", "ToolArgumentError", "ToolBox", "TurnMetrics", "run_agent", "speakable",
    "validate_arguments",
]
