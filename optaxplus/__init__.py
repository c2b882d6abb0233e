"""optaxplus: optimizer building blocks from recent optimization research, as optax transforms.

Modules: ``polyak`` (SPS and MomSPS step sizes), ``preconditioned`` (PSPS and SANIA,
preconditioned Polyak steps), ``sharpness`` (Unified SAM), ``exploration`` (the adaptor E
and ALTO), ``accumulation`` (``multi_steps``), ``training`` / ``parallel`` / ``checkpoint``
(Flax train steps, data parallel, orbax checkpoints). Everything public is re-exported here.

The optimizers need only JAX, optax, chex and NumPy. The training layer is imported on
first use: ``TrainState``, ``make_train_step``, ``nnx_grad_fn`` and the checkpoints need the
``flax`` extra (``pip install 'optaxplus[flax]'``) and say so when it is missing;
``data_parallel``, ``fsdp_sharding`` and ``shard_batch`` need only JAX.
"""

import importlib
from typing import Any

from optaxplus.accumulation import MultiStepsValueState
from optaxplus.accumulation import multi_steps
from optaxplus.exploration import ExploreState
from optaxplus.exploration import alto
from optaxplus.exploration import eadam
from optaxplus.exploration import eadamw
from optaxplus.exploration import esgd
from optaxplus.exploration import explore
from optaxplus.polyak import PolyakStepState
from optaxplus.polyak import adasps
from optaxplus.polyak import decsps
from optaxplus.polyak import momadasps
from optaxplus.polyak import momdecsps
from optaxplus.polyak import momsps
from optaxplus.polyak import momsps_smooth
from optaxplus.polyak import scale_by_adasps
from optaxplus.polyak import scale_by_decsps
from optaxplus.polyak import scale_by_sps
from optaxplus.polyak import scale_by_sps_smooth
from optaxplus.polyak import sps
from optaxplus.preconditioned import DiagonalPreconditionerState
from optaxplus.preconditioned import PreconditionedPolyakState
from optaxplus.preconditioned import psps
from optaxplus.preconditioned import sania
from optaxplus.preconditioned import scale_by_adagrad_preconditioner
from optaxplus.preconditioned import scale_by_adagrad_sqr
from optaxplus.preconditioned import scale_by_adam_preconditioner
from optaxplus.preconditioned import scale_by_adam_sqr
from optaxplus.preconditioned import scale_by_hutchinson
from optaxplus.preconditioned import scale_by_preconditioned_polyak
from optaxplus.preconditioned import scale_by_sania
from optaxplus.sharpness import SAMPerturbationState
from optaxplus.sharpness import UnifiedSAMState
from optaxplus.sharpness import asam
from optaxplus.sharpness import sam
from optaxplus.sharpness import sam_perturbation
from optaxplus.sharpness import unified_sam
from optaxplus.sharpness import usam

__version__ = '0.1.0'

# Loaded on first access (PEP 562): name -> the module that defines it.
_LAZY = {
    'checkpoint': 'optaxplus.checkpoint',
    'parallel': 'optaxplus.parallel',
    'training': 'optaxplus.training',
    'restore_checkpoint': 'optaxplus.checkpoint',
    'save_checkpoint': 'optaxplus.checkpoint',
    'data_parallel': 'optaxplus.parallel',
    'fsdp_sharding': 'optaxplus.parallel',
    'shard_batch': 'optaxplus.parallel',
    'TrainState': 'optaxplus.training',
    'make_train_step': 'optaxplus.training',
    'nnx_grad_fn': 'optaxplus.training',
}

__all__ = [
    # polyak
    'PolyakStepState', 'adasps', 'decsps', 'momadasps', 'momdecsps', 'momsps',
    'momsps_smooth', 'scale_by_adasps', 'scale_by_decsps', 'scale_by_sps',
    'scale_by_sps_smooth', 'sps',
    # preconditioned
    'DiagonalPreconditionerState', 'PreconditionedPolyakState', 'psps', 'sania',
    'scale_by_adagrad_preconditioner', 'scale_by_adagrad_sqr', 'scale_by_adam_preconditioner',
    'scale_by_adam_sqr', 'scale_by_hutchinson', 'scale_by_preconditioned_polyak',
    'scale_by_sania',
    # sharpness
    'SAMPerturbationState', 'UnifiedSAMState', 'asam', 'sam', 'sam_perturbation',
    'unified_sam', 'usam',
    # exploration
    'ExploreState', 'alto', 'eadam', 'eadamw', 'esgd', 'explore',
    # accumulation
    'MultiStepsValueState', 'multi_steps',
    # training, parallel, checkpoint (lazy)
    'TrainState', 'make_train_step', 'nnx_grad_fn',
    'data_parallel', 'fsdp_sharding', 'shard_batch', 'restore_checkpoint', 'save_checkpoint',
]


def __getattr__(name: str) -> Any:
  """Imports the training layer on first use; a missing extra raises ``ImportError`` then."""
  if name not in _LAZY:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  module = importlib.import_module(_LAZY[name])
  value = module if module.__name__ == f'{__name__}.{name}' else getattr(module, name)
  globals()[name] = value  # later accesses skip __getattr__
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_LAZY))
