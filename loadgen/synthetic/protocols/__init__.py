"""One module per engine protocol served by the synthetic engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loadgen.synthetic.protocols.base import BaseProtocol
    from loadgen.synthetic.wire import Host

PROTOCOLS = ("vllm", "sglang", "trtllm", "llamacpp")


def make_protocol(name: str, server: Host) -> BaseProtocol:
    if name == "vllm":
        from loadgen.synthetic.protocols.vllm import VllmProtocol as cls
    elif name == "sglang":
        from loadgen.synthetic.protocols.sglang import SglangProtocol as cls
    elif name == "trtllm":
        from loadgen.synthetic.protocols.trtllm import TrtllmProtocol as cls
    elif name == "llamacpp":
        from loadgen.synthetic.protocols.llamacpp import LlamacppProtocol as cls
    else:
        raise ValueError(f"unknown protocol {name!r} (choose from {', '.join(PROTOCOLS)})")
    return cls(server)
