"""Backend selection for embedders."""
import logging

LOG = logging.getLogger(__name__)

BACKENDS = ("auto", "torch")


def create_embedder(model, backend: str = "auto", checkpoint=None, **kwargs):
    """Build the embedder for `backend`; "auto" picks the fastest backend that works here."""
    from vpr_ros.runtime.embedder import TorchEmbedder

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if backend == "auto":
        LOG.info("backend auto: using torch")
    return TorchEmbedder(model, **kwargs)
