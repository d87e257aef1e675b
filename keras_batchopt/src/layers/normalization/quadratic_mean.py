"""What PowerNorm and Unified Normalization share: a per-channel quadratic
mean without centering, a running one for inference, a step counter."""

from keras import ops

from keras_batchopt.src.layers.normalization import statistics
from keras_batchopt.src.layers.normalization.base import ChannelNormalization


class QuadraticMeanNormalization(ChannelNormalization):
    """`gamma`, `beta`, `moving_variance` (a running quadratic mean, no
    `moving_mean`), the int32 step counter `iterations`, and inference
    `y = gamma * x / sqrt(moving_variance + eps) + beta`."""

    def build_statistics(self, channels):
        self.gamma, self.beta = self.build_affine(channels)
        self.build_moving_variance(channels)
        self.iterations = self.add_counter("iterations")

    def add_counter(self, name):
        return self.add_weight(
            shape=(),
            name=name,
            initializer="zeros",
            dtype="int32",
            trainable=False,
        )

    def next_step(self):
        """Advances `iterations`; returns the new step, as an int tensor."""
        step = self.iterations + 1
        self.iterations.assign(step)
        return step

    def affine_inputs(self, like):
        """`gamma` and `beta` in the dtype of the per-channel `like`, with
        ones and zeros standing in for a disabled `scale` or `center`
        (the custom backward ops take both)."""
        dtype = like.dtype
        gamma = self.read(self.gamma, dtype)
        beta = self.read(self.beta, dtype)
        return (
            ops.ones_like(like) if gamma is None else gamma,
            ops.zeros_like(like) if beta is None else beta,
        )

    def _affine(self, dtype):
        return statistics.scale_and_offset(
            None,
            ops.cast(self.moving_variance, dtype),
            self.read(self.gamma, dtype),
            self.read(self.beta, dtype),
            self.epsilon,
        )

    def inference(self, rows):
        """`rows` normalized by the running quadratic mean."""
        scale, shift = self._affine(rows.dtype)
        y = rows * scale
        return y if shift is None else y + shift

    def get_config(self):
        config = super().get_config()
        config.pop("moving_mean_initializer")
        return config
