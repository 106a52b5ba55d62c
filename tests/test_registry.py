"""Each engine registered once: the registry's entries hold together with the adapters, the
launchers and the synthetic engine's protocols."""

from __future__ import annotations

import pytest

from loadgen.engines import ENGINES, LAUNCHABLE_ENGINES, REGISTRY, adapter_class
from loadgen.launch.commands import DEFAULT_PORTS
from loadgen.synthetic.protocols import PROTOCOLS


@pytest.mark.parametrize("name", ENGINES)
def test_every_engine_entry_is_whole(name):
    entry = REGISTRY[name]
    cls = adapter_class(name)
    assert cls.name == name
    # the synthetic engine serves every surface the client speaks (it keeps its own list)
    assert entry.synthetic_protocol in PROTOCOLS
    caps = entry.capabilities()
    assert caps["per_request_sd"] in ("always", "optional", "never")
    assert caps["prefix_cache_reset"] in ("salt", "flush", "none")
    assert caps["token_ids"] or caps["text"]
    # a launchable engine has a launcher (a default port, command builders)
    assert (name in DEFAULT_PORTS) == entry.launchable


def test_lists_derive_from_the_registry():
    assert ENGINES == ("vllm", "sglang", "trtllm", "llamacpp", "openai")
    assert LAUNCHABLE_ENGINES == ("vllm", "sglang", "trtllm", "llamacpp")
    assert REGISTRY["vllm"].capabilities() == {"token_ids": True, "text": False,
                                               "per_request_sd": "optional",
                                               "prefix_cache_reset": "salt"}
    assert REGISTRY["sglang"].capabilities()["prefix_cache_reset"] == "flush"
    assert REGISTRY["openai"].capabilities()["text"] is True
    with pytest.raises(ValueError, match="unknown engine 'tgi'"):
        adapter_class("tgi")
