"""One training run, from resolved options to the last checkpoint: check the inputs first (the
experiment folder, checkpoints, data), then create the experiment and train."""
import logging
from dataclasses import dataclass

from dataset import get_loader
from model import build_model, describe_config, strip_module_prefix, transfer_weights
from model.summary import model_summary
from myutils import ModelFileError, load_model, read_checkpoint, state_dict_of, checkpoint_config
from training.experiment import Experiment, check_experiment_folder, experiment_folder, resume_checkpoint_path
from training.options import model_config_from
from training.state import TrainingDiverged, check_resumable, seed_everything
from training.sample_record import SampleRecorder
from training.trainer import FirstBatches, Trainer

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """Where a finished run left its model."""
    checkpoint_path: str
    best_path: str
    epoch: int
    best_psnr: float

    def summary(self):
        best = (f"; best model (PSNR {self.best_psnr:.3f} dB): {self.best_path}"
                if self.best_psnr > float("-inf") else "")
        return f"checkpoint (epoch {self.epoch}): {self.checkpoint_path}{best}"


def build_loaders(args, config, runtime):
    """The training and validation loaders (this process's shards under DDP)."""
    common = dict(n_inputs=config["n_inputs"], n_outputs=config["n_outputs"], input_frames=args.input_frames,
                  num_workers=args.num_workers, distributed=runtime.distributed, seed=args.seed)
    train = get_loader(args.dataset, "train", args.data_root, batch_size=args.batch_size,
                       crop_size=args.crop_size, **common)
    val_dataset = args.val_dataset or args.dataset
    val_root = args.val_data_root if args.val_dataset else args.data_root
    val = get_loader(val_dataset, "val", val_root, batch_size=args.test_batch_size, **common)
    return train, val


HEAD = ("outconv.1.weight", "outconv.1.bias")


def initialise_from_pretrained(model, state_dict, path, source_config=None):
    """Copy every tensor of ``state_dict`` (read from ``path``, a model of ``source_config``) that fits
    ``model``; returns the ``TransferReport``; ModelFileError when nothing fits. The output head is
    not copied between models with different heads (``head``, ``motion_prior``): the same weights
    mean another thing."""
    if source_config is not None and _head_of(source_config) != _head_of(model.config):
        state_dict = {k: v for k, v in strip_module_prefix(state_dict).items() if k not in HEAD}
    report = transfer_weights(model, state_dict)
    if not report.copied:
        raise ModelFileError(f"{path}: none of its weights fit {describe_config(model.config)}: "
                             "is it a FLAVR model for the same factor?")
    return report


def _head_of(config):
    return config.get("head", "frames"), config.get("motion_prior", "none")


def fit(trainer, train_loader, val_loader):
    """``trainer.fit``; a divergence's message says which checkpoint is the last good one."""
    try:
        trainer.fit(train_loader, val_loader)
    except TrainingDiverged as error:
        kept = (f"the last good checkpoint is {trainer.last_checkpoint} (epoch {trainer.epoch})"
                if trainer.last_checkpoint else "no checkpoint was written yet")
        raise TrainingDiverged(f"{error}; {kept}") from None


def log_set_up(args, runtime, model, transfer, train_loader, val_loader):
    """Log the model summary, the pretrained weights' report, the data and the device."""
    log.info("%s", model_summary(model, describe_config(model.config)))
    if transfer is not None:
        log.info("initialised from %s:\n%s", args.pretrained, transfer.summary())
    log.info("%s: %d training samples (%d batches per process), %d validation samples", args.dataset,
             len(train_loader.dataset), len(train_loader), len(val_loader.dataset))
    log.info("training on %s (%d process%s)", runtime.device, runtime.world_size,
             "es" if runtime.world_size > 1 else "")


def read_inputs(args, folder, config):
    """Check every file the run depends on before anything is written: ``(resume checkpoint or None,
    its path, pretrained checkpoint or None)``; ValueError / ModelFileError otherwise."""
    check_experiment_folder(folder, args.resume)
    resume, resume_path = None, None
    if args.resume:
        resume_path = resume_checkpoint_path(folder, args.resume)
        resume = read_checkpoint(resume_path)
        check_resumable(resume, resume_path, config)
    pretrained = read_checkpoint(args.pretrained) if args.pretrained else None
    if pretrained is not None:
        state_dict_of(pretrained, args.pretrained)
    return resume, resume_path, pretrained


def load_teacher(args, config, device):
    """The frozen ``--teacher`` model (eval mode, on ``device``) for the same factor, or None."""
    if not args.teacher:
        return None
    teacher, description = load_model(args.teacher, device, n_outputs=config["n_outputs"])
    if teacher.config["n_inputs"] != config["n_inputs"]:
        raise ModelFileError(f"{args.teacher}: the teacher takes {teacher.config['n_inputs']} input frames, "
                             f"the model {config['n_inputs']}")
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    log.info("distilling from %s (%s), weight %g", args.teacher, description, args.distill_weight)
    return teacher


def run_training(args, runtime):
    """Train as ``args`` (resolved options) say on ``runtime``; returns an ``Outcome``."""
    folder, config = experiment_folder(args), model_config_from(args)
    resume, resume_path, pretrained = read_inputs(args, folder, config)
    runtime.barrier()  # every rank has checked the folder before rank 0 creates it
    seed_everything(args.seed)
    model = build_model(config, log_summary=False)
    transfer = None
    if pretrained is not None:
        transfer = initialise_from_pretrained(model, state_dict_of(pretrained, args.pretrained), args.pretrained,
                                              checkpoint_config(pretrained))
    teacher = load_teacher(args, config, runtime.device)
    train_loader, val_loader = build_loaders(args, config, runtime)
    total_steps = args.lr_decay_steps or args.max_epoch * len(FirstBatches(train_loader, args.max_steps_per_epoch))
    recorder = SampleRecorder(args.debug_record, runtime.rank) if args.debug_record else None
    experiment = Experiment(folder, enabled=runtime.is_main).open(
        args, resumed_epoch=resume["epoch"] if resume else None)
    try:
        log_set_up(args, runtime, model, transfer, train_loader, val_loader)
        trainer = Trainer(args, runtime, model, experiment, recorder, total_steps, teacher)
        if resume is not None:
            trainer.restore(resume, resume_path)
        fit(trainer, train_loader, val_loader)
    finally:
        experiment.close()
    return Outcome(experiment.checkpoint_path, experiment.best_path, trainer.epoch, trainer.best_psnr)
