"""Model-backed roles: a task handler that asks an OpenAI-compatible chat-completions endpoint.

    from agentlab.llm import LlmConfig, ToolSpec, model_role
    config = LlmConfig("http://localhost:11434/v1", "llama3.2")    # or LlmConfig.from_env()
    cto = model_role("You are the CTO.", tools=[ToolSpec("search", "Search the docs")],
                     config=config)
    Organisation(lab, "acme", roles={**REFERENCE_ROLES, "cto": cto}).start()

With ``AGENTLAB_LLM_BASE_URL`` and ``AGENTLAB_LLM_MODEL`` set (and ``AGENTLAB_LLM_API_KEY``
for a hosted API), ``agentlab.org.default_roles()`` and so ``Organisation(lab)`` run the
reference roles on the model; unset, they stay deterministic. Modules: ``config`` (the
endpoint, from the environment), ``chat`` (one streamed completion over httpx) and ``role``
(the handler: tool calls become delegations and async tools); ``scripted`` is a stand-in
endpoint that replays replies written in advance, for tests and offline lessons. It sits below the
organisation and speaks plain HTTP: it imports neither ``agentlab.org`` nor ``nats``.
"""

from .chat import (
    ChatTurn,
    ModelError,
    ModelRejected,
    ModelUnavailable,
    ToolCallRequest,
    Usage,
    achat,
)
from .config import LlmConfig, LlmConfigError
from .role import (
    DELEGATE_TOOL,
    REFERENCE_PROMPTS,
    ContextLike,
    ModelRole,
    TaskLike,
    ToolSpec,
    model_role,
    reference_model_roles,
)
from .scripted import ScriptedModel

__all__ = [
    "LlmConfig", "LlmConfigError", "ModelRole", "model_role", "ToolSpec",
    "reference_model_roles", "REFERENCE_PROMPTS", "DELEGATE_TOOL", "ModelError",
    "ModelUnavailable", "ModelRejected", "achat", "ChatTurn", "ToolCallRequest", "Usage",
    "TaskLike", "ContextLike", "ScriptedModel",
]
