"""Which torch device a job computes on: CUDA when the job has a GPU and the config allows it, else CPU."""

from __future__ import annotations


class DeviceError(RuntimeError):
    """The config asks for a device this job does not have."""


def select_device(requested: str = "auto", log=print):
    """``auto``: CUDA if a GPU is visible to this job, else CPU; ``cpu``; ``cuda`` (error without a GPU).

    The choice is logged, with the GPU's name, so that a log shows where every number was computed.
    """
    import torch

    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise DeviceError("device 'cuda' was requested but this job sees no GPU "
                          "(set device: auto, or give the rule a GPU: resources gpu=1)")
    use_cuda = requested == "cuda" or (requested == "auto" and available)
    device = torch.device("cuda" if use_cuda else "cpu")
    detail = f" ({torch.cuda.get_device_name(device)})" if use_cuda else ""
    log(f"device: {device}{detail} (requested '{requested}', CUDA available: {available})")
    return device
