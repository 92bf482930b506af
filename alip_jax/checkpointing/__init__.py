from alip_jax.checkpointing.manager import (SaveFailed, SaveWatcher, make_manager, restore_latest,
                                            save)
from alip_jax.checkpointing.preemption import (PreemptionNotice, diverged_error,
                                               save_unless_diverging)
from alip_jax.checkpointing.restore import (NoReadableCheckpoint, StateShapeMismatch, check_shapes,
                                            restore_newest_readable)
from alip_jax.rundir import RunConfigMismatch
