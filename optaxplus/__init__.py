"""optaxplus: optimizer building blocks from recent optimization research, as optax transforms.

Modules: ``polyak`` (SPS and MomSPS step sizes), ``sharpness`` (Unified SAM), ``exploration``
(the adaptor E and ALTO), ``training`` / ``parallel`` / ``checkpoint`` (Flax train steps,
data parallel, orbax checkpoints). Everything public is re-exported here.
"""

__version__ = '0.1.0'

from optaxplus import checkpoint
from optaxplus import parallel
from optaxplus import training
from optaxplus.checkpoint import restore_checkpoint
from optaxplus.checkpoint import save_checkpoint
from optaxplus.exploration import ExploreState
from optaxplus.exploration import alto
from optaxplus.exploration import eadam
from optaxplus.exploration import eadamw
from optaxplus.exploration import esgd
from optaxplus.exploration import explore
from optaxplus.parallel import data_parallel
from optaxplus.parallel import shard_batch
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
from optaxplus.sharpness import SAMPerturbationState
from optaxplus.sharpness import UnifiedSAMState
from optaxplus.sharpness import asam
from optaxplus.sharpness import sam
from optaxplus.sharpness import sam_perturbation
from optaxplus.sharpness import unified_sam
from optaxplus.sharpness import usam
from optaxplus.training import MultiStepsValueState
from optaxplus.training import TrainState
from optaxplus.training import make_train_step
from optaxplus.training import multi_steps
from optaxplus.training import nnx_grad_fn
