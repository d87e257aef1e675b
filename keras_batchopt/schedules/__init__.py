"""Public learning-rate schedules and batch-size rules of keras_batchopt."""

from keras_batchopt.src.schedules.batch_scaling import (
    scale_learning_rate as scale_learning_rate,
)
from keras_batchopt.src.schedules.batch_scaling import (
    scale_training_length as scale_training_length,
)
from keras_batchopt.src.schedules.gradual_warmup import (
    GradualWarmup as GradualWarmup,
)
from keras_batchopt.src.schedules.infinite_schedule import (
    InfiniteSchedule as InfiniteSchedule,
)
from keras_batchopt.src.schedules.power_schedule import (
    PowerSchedule as PowerSchedule,
)
from keras_batchopt.src.schedules.warmup_stable_decay import (
    WarmupStableDecay as WarmupStableDecay,
)
