"""Which NVIDIA GPUs this machine has, through NVML, or the reason none can be seen."""


def detect_gpus():
    """([{'index', 'name', 'uuid'}], reason): the reason is None when NVML answered."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return [], f"NVML cannot start ({e}): no NVIDIA driver here"
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            uuid = pynvml.nvmlDeviceGetUUID(h)
            gpus.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                         "uuid": uuid.decode() if isinstance(uuid, bytes) else uuid})
        return gpus, None if gpus else "NVML found no GPU"
    finally:
        pynvml.nvmlShutdown()
