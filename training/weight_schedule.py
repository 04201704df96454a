"""The weight schedule of a binary run, in one place: which weights each epoch trains.

Epochs 1 .. R (``--stage1_epochs``, ReActNet's first stage) train real weights with binary
activations (no BinOp); the next S (``--soft_sign_epochs``) train soft signs ``alpha * tanh(k W /
alpha)`` whose sharpness k rises geometrically at every step from ``SHARPNESS[0]`` (nearly linear) to
``SHARPNESS[1]`` (nearly the sign); the rest train binary weights ``alpha * sign(W)``, and only those
epochs count for ``model_best.pth``. New binary runs default to soft signs over ``SOFT_SIGN_FRACTION``
of the epochs after the first stage (the recipe measured by ``benchmarks/quality_grid.py``).
"""
from dataclasses import dataclass

SHARPNESS = (1.0, 100.0)      # soft signs: k from nearly linear (tanh(W / alpha)) to nearly the sign
SOFT_SIGN_FRACTION = (5, 6)   # new binary runs: soft signs for 5/6 of the epochs after the first stage


@dataclass(frozen=True)
class WeightSchedule:
    """``real_epochs`` of real weights, then ``soft_epochs`` of soft signs, then binary weights."""
    real_epochs: int = 0
    soft_epochs: int = 0

    @classmethod
    def of(cls, args):
        """The schedule of resolved training options (``--stage1_epochs``, ``--soft_sign_epochs``)."""
        return cls(args.stage1_epochs, args.soft_sign_epochs or 0)

    def binarizes(self, epoch):
        """Whether ``epoch`` (from 1) runs the BinOp: soft or binary weights, not the first stage's real ones."""
        return epoch > self.real_epochs

    def sharpness(self, epoch, step, steps):
        """The soft sign's ``k`` at ``step`` of ``steps`` in ``epoch``; None (hard signs, or no BinOp) outside
        the soft-sign epochs."""
        if not self.real_epochs < epoch <= self.real_epochs + self.soft_epochs:
            return None
        progress = (epoch - self.real_epochs - 1 + step / max(steps, 1)) / self.soft_epochs
        start, end = SHARPNESS
        return start * (end / start) ** progress

    def final_stage(self, epoch):
        """Whether ``epoch`` trains the binary model itself, the only epochs ``model_best.pth`` considers."""
        return epoch > self.real_epochs + self.soft_epochs

    def describe(self, max_epoch):
        """One line: which epochs train real weights, soft signs and binary weights."""
        def epochs(first, last):
            return f"epoch {first}" if first == last else f"epochs {first}-{last}"

        real, soft = self.real_epochs, self.soft_epochs
        if not real and not soft:
            return "binary weights from the first step"
        phases = [f"{epochs(1, real)}: real weights"] if real else []
        if soft:
            phases.append(f"{epochs(real + 1, real + soft)}: soft signs alpha*tanh(kW/alpha), "
                          f"k {SHARPNESS[0]:g} -> {SHARPNESS[1]:g}")
        phases.append(f"{epochs(real + soft + 1, max_epoch)}: binary weights (only these count for model_best.pth)")
        return "; ".join(phases)


def check_soft_sign_epochs(args, epochs):
    """ValueError (one line) unless ``epochs`` of soft signs leave at least one epoch of binary weights."""
    if not (epochs >= 0 and args.stage1_epochs + epochs < args.max_epoch):
        raise ValueError(f"--stage1_epochs + --soft_sign_epochs must leave at least one epoch of binary weights "
                         f"before --max_epoch {args.max_epoch}, got {args.stage1_epochs} + {epochs}")


def soft_sign_epochs(args, resumed_args=None):
    """``--soft_sign_epochs`` as given; unset: the resumed run's own (0 for runs from before the option),
    else ``SOFT_SIGN_FRACTION`` of the epochs after ``--stage1_epochs`` for the binary arch, 0 for flavr."""
    if args.soft_sign_epochs is not None:
        return args.soft_sign_epochs
    if resumed_args is not None:
        epochs = resumed_args.get("soft_sign_epochs") or 0
        check_soft_sign_epochs(args, epochs)
        return epochs
    if args.arch != "binary":
        return 0
    numerator, denominator = SOFT_SIGN_FRACTION
    return (args.max_epoch - args.stage1_epochs) * numerator // denominator
