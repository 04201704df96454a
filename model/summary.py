"""A larq-style model summary: binary and real-valued parameters per stage, and model sizes."""
from dataclasses import dataclass

from model.binconv import BINARY_LAYERS

BYTES_FP32 = 4


@dataclass
class StageCount:
    name: str
    binary: int = 0       # weights stored as one bit each
    real: int = 0         # parameters stored as fp32
    scales: int = 0       # one fp32 alpha per output filter of each binary layer

    @property
    def fp32_bytes(self):
        return (self.binary + self.real) * BYTES_FP32

    @property
    def packed_bytes(self):
        return self.binary / 8 + (self.real + self.scales) * BYTES_FP32


def _stage_name(param_name):
    """``encoder.layer2.0.conv1.0.weight`` -> ``encoder.layer2``; ``decoder.1...`` -> ``decoder.1``."""
    parts = param_name.split(".")
    return ".".join(parts[:2]) if parts[0] in ("encoder", "decoder") else parts[0]


def count_parameters(model):
    """Per-stage ``StageCount`` list in module order (trainable parameters only)."""
    stages = {}
    binary_weights = {}
    for module in model.modules():
        if isinstance(module, BINARY_LAYERS):
            binary_weights[id(module.weight)] = module.weight.shape[1 if module.transposed else 0]
    for name, p in model.named_parameters():
        stage = stages.setdefault(_stage_name(name), StageCount(_stage_name(name)))
        if id(p) in binary_weights:
            stage.binary += p.numel()
            stage.scales += binary_weights[id(p)]
        else:
            stage.real += p.numel()
    return list(stages.values())


def _mb(n_bytes):
    return f"{n_bytes / 1e6:.2f} MB"


def model_summary(model, title="model"):
    """A printable table: per stage binary / real parameter counts, fp32 and packed sizes."""
    stages = count_parameters(model)
    total = StageCount("total", sum(s.binary for s in stages), sum(s.real for s in stages),
                       sum(s.scales for s in stages))
    rows = [f"{'stage':<18}{'binary params':>15}{'real params':>14}{'fp32 size':>12}{'packed size':>13}"]
    for s in stages + [total]:
        if s is total:
            rows.append("-" * len(rows[0]))
        rows.append(f"{s.name:<18}{s.binary:>15,}{s.real:>14,}{_mb(s.fp32_bytes):>12}"
                    f"{_mb(s.packed_bytes):>13}")
    ratio = total.fp32_bytes / total.packed_bytes
    rows.append(f"{title}: {total.binary + total.real:,} parameters, {_mb(total.fp32_bytes)} as fp32, "
                f"{_mb(total.packed_bytes)} with 1-bit binary weights ({ratio:.1f}x smaller)")
    return "\n".join(rows)
