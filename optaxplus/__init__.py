"""optaxplus: optimizer building blocks from recent optimization research, as optax transforms."""

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
