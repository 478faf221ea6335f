"""Where the model is: an OpenAI-compatible endpoint, from the environment or given in code.

    config = LlmConfig.from_env()     # None unless AGENTLAB_LLM_BASE_URL is set
    config = LlmConfig("http://localhost:11434/v1", "llama3.2")         # Ollama, no key
    config = LlmConfig("https://api.openai.com/v1", "gpt-4o-mini", api_key="sk-...")

The variables: ``AGENTLAB_LLM_BASE_URL`` (the URL that ``/chat/completions`` is appended
to), ``AGENTLAB_LLM_MODEL``, ``AGENTLAB_LLM_API_KEY`` (optional: local servers need none),
``AGENTLAB_LLM_TIMEOUT`` (optional, seconds) and ``AGENTLAB_LLM_ROLES`` (optional,
comma-separated: which reference roles run on the model; all of them if unset).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import AgentlabError

BASE_URL, MODEL, API_KEY = "AGENTLAB_LLM_BASE_URL", "AGENTLAB_LLM_MODEL", "AGENTLAB_LLM_API_KEY"
TIMEOUT, ROLES = "AGENTLAB_LLM_TIMEOUT", "AGENTLAB_LLM_ROLES"

_EXAMPLES = ("http://localhost:11434/v1 (Ollama), http://localhost:8000/v1 (vLLM), "
             "http://localhost:1234/v1 (LM Studio) or https://api.openai.com/v1")


class LlmConfigError(AgentlabError, ValueError):
    """The model's configuration cannot work: the message names the setting and the fix."""


def _check_url(url: str, setting: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LlmConfigError(f"{setting}={url!r} is not an http(s) URL: give the endpoint's "
                             f"base URL, such as {_EXAMPLES}.")
    return url.strip().rstrip("/")


@dataclass(frozen=True)
class LlmConfig:
    """An OpenAI-compatible chat-completions endpoint and the model to ask there.

    ``roles`` (from ``AGENTLAB_LLM_ROLES``) names the reference roles a lab runs on the
    model; None means all of them. The API key never shows in ``repr()`` or ``str()``.
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    temperature: float | None = None
    roles: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Frozen: a normalised field has to be set around the dataclass's own __setattr__.
        object.__setattr__(self, "base_url", _check_url(self.base_url, "LlmConfig(base_url)"))
        if not self.model or not self.model.strip():
            raise LlmConfigError("LlmConfig(model) is empty: name the model to ask, such "
                                 "as 'llama3.2' (Ollama) or 'gpt-4o-mini'.")
        if self.timeout <= 0:
            raise LlmConfigError(f"LlmConfig(timeout={self.timeout!r}): give seconds, above 0.")

    @property
    def url(self) -> str:
        """Where the completions are asked for."""
        return f"{self.base_url}/chat/completions"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LlmConfig | None:
        """The configuration the ``AGENTLAB_LLM_*`` variables give, or None if
        ``AGENTLAB_LLM_BASE_URL`` is unset (the deterministic roles stay the default)."""
        env = os.environ if environ is None else environ
        base_url = env.get(BASE_URL, "").strip()
        if not base_url:
            return None
        base_url = _check_url(base_url, BASE_URL)
        model = env.get(MODEL, "").strip()
        if not model:
            raise LlmConfigError(
                f"{BASE_URL} is set ({base_url}) but {MODEL} is not: set {MODEL} to the "
                f"name of the model to ask (such as llama3.2 for Ollama), or unset {BASE_URL} "
                "to keep the deterministic reference roles.")
        timeout = 60.0
        if env.get(TIMEOUT, "").strip():
            try:
                timeout = float(env[TIMEOUT])
            except ValueError:
                timeout = 0.0
            if not timeout > 0:
                raise LlmConfigError(f"{TIMEOUT}={env[TIMEOUT]!r} is not a number of seconds "
                                     "above 0: set it to, say, 120, or unset it.")
        roles = tuple(r.strip() for r in env.get(ROLES, "").split(",") if r.strip()) or None
        return cls(base_url, model, api_key=env.get(API_KEY, "").strip() or None,
                   timeout=timeout, roles=roles)

    def __repr__(self) -> str:
        key = "'***'" if self.api_key else "None"
        extra = "".join(f", {name}={value!r}" for name, value in
                        (("temperature", self.temperature), ("roles", self.roles))
                        if value is not None)
        return (f"LlmConfig(base_url={self.base_url!r}, model={self.model!r}, api_key={key}, "
                f"timeout={self.timeout!r}{extra})")

    __str__ = __repr__
