import keras
import numpy as np
from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import statistics

MODES = ("basic", "learned")


def nearest_indices(source, target):
    """PyTorch's `interpolate(mode="nearest")` source index of each target
    index: `min(floor(i * source / target), source - 1)` in float32."""
    if source == target:
        return None
    scale = np.float32(source / target)
    index = np.floor(np.arange(target, dtype=np.float32) * scale)
    return np.minimum(index, source - 1).astype("int32")


def resize_nearest(mask, size, spatial_axes):
    """Resizes the spatial axes of `mask` to `size` as PyTorch does."""
    for axis, target in zip(spatial_axes, size):
        index = nearest_indices(mask.shape[axis], target)
        if index is not None:
            mask = ops.take(mask, index, axis=axis)
    return mask


@keras_batchopt_export("keras_batchopt.layers.RegionNormalization")
class RegionNormalization(keras.layers.Layer):
    """Region normalization (Yu et al.), for image inpainting.

    The pixels of a corrupted region (an inpainting hole) and of the rest
    of the image have different statistics, and batch normalization mixes
    them. Region normalization normalizes each region with its own mean
    and variance, per channel, over the batch and the spatial axes:

    ```
    y = (x - mu_R) / sqrt(var_R + epsilon) * sqrt(|R| / N)    (x in R)
    var_R = sum over R of (x - mu_R)^2 / N
    ```

    where `N` counts the batch's pixels and `|R|` those of region `R` (the
    official code's formulation: the outside of `R` is filled with `mu_R`
    before a batch normalization, and `sqrt(|R| / N)` undoes the variance
    that filling removes). An empty region gives 0.

    - `mode="basic"` (RN-B): the region is given, as `region_mask` (1 in
      the region, for example the hole, 0 elsewhere), resized to the
      feature map by nearest neighbour as in PyTorch. The result is then
      `y * (1 + gamma_fg)` on the region and `y * (1 + gamma_bg)` off it,
      plus `beta_fg + beta_bg`; the four vectors are learned and start at
      0.
    - `mode="learned"` (RN-L): the region is learned. A convolution of the
      channel mean and maximum, through a sigmoid, gives a map `s`; the
      region is `s >= threshold` (no gradient through the threshold).
      The result is `y * (1 + conv_gamma(s)) + conv_beta(s)`, a pixel-wise
      affine.

    The layer keeps no moving statistics: training and inference both use
    the statistics of the batch at hand, as the official code does, so an
    inference output depends on the other images of its batch (a batch of
    one works).

    Args:
        mode: `"basic"` (RN-B, the mask is given) or `"learned"` (RN-L).
        threshold: RN-L's threshold on the attention map, in [0, 1].
            Defaults to `0.8`.
        kernel_size: RN-L's convolution size, an odd int. Defaults to 7.
        epsilon: a float > 0. Defaults to `1e-5`.
        data_format: `"channels_last"` or `"channels_first"`; defaults to
            `keras.config.image_data_format()`.
        synchronized: whether, in training, the batch statistics are
            those of every replica's batch: under a `tf.distribute`
            strategy the moments are all-reduced across the replicas (as
            `keras.layers.BatchNormalization(synchronized=True)` does);
            under `keras.distribution` on JAX a jitted step already
            reduces over the global batch, synchronized or not. Defaults
            to `False`. `True` raises a ValueError on torch (Keras has no
            torch distribution).
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: a 4-D tensor of feature maps.
        region_mask: for `"basic"`, the binary region mask: `(batch, height,
            width, 1)` (or `(batch, 1, height, width)` in channels_first,
            or `(batch, height, width)`), of any height and width; it is
            resized to the feature map. Not allowed for `"learned"`.
        training: unused; batch statistics are always used.

    Returns:
        A tensor of the shape of `inputs`, in the layer's compute dtype.

    Example:

    >>> import keras, keras_batchopt
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    >>> x[:, :4] += 10.0  # a "hole" with other statistics
    >>> mask = np.zeros((2, 16, 16, 1), "float32")
    >>> mask[:, :8] = 1.0  # the hole, at the input's resolution
    >>> layer = keras_batchopt.layers.RegionNormalization(mode="basic")
    >>> y = keras.ops.convert_to_numpy(layer(x, region_mask=mask))
    >>> hole, rest = y[:, :4], y[:, 4:]
    >>> bool(abs(hole.mean()) < 1e-5 and abs(rest.mean()) < 1e-5)
    True
    >>> [round(float(hole.std()), 3), round(float(rest.std()), 3)]
    [1.0, 1.0]

    Note:
        Following the official code, both offsets `beta_fg` and `beta_bg`
        are added everywhere (the paper writes each on its own region);
        the convolutions of RN-L start from Keras's default initializers
        rather than PyTorch's. The region moments are the corrected
        two-pass ones (the sums of the centered values correct the means
        and the squares), so inputs with large means keep float32
        accuracy; the official code takes one-pass means.

    References:
        - Yu et al., 2020, [Region Normalization for Image Inpainting](
          https://arxiv.org/abs/1911.10375)
    """

    def __init__(
        self,
        mode="basic",
        threshold=0.8,
        kernel_size=7,
        epsilon=1e-5,
        data_format=None,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.synchronized = statistics.check_synchronized(
            type(self).__name__, synchronized
        )
        self.mode = validation.check_one_of("mode", mode, MODES)
        self.threshold = validation.check_in_interval(
            "threshold", threshold, 0.0, 1.0, True, True
        )
        self.kernel_size = validation.check_positive_int(
            "kernel_size", kernel_size
        )
        if self.kernel_size % 2 == 0:
            validation.fail("kernel_size", "an odd int >= 1", kernel_size)
        self.epsilon = validation.check_positive("epsilon", epsilon)
        data_format = data_format or keras.config.image_data_format()
        self.data_format = validation.check_one_of(
            "data_format", data_format, ("channels_last", "channels_first")
        )
        self.axis = -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "RegionNormalization expects 4-D feature maps. Received: "
                f"input_shape={tuple(input_shape)}"
            )
        channels = input_shape[self.axis]
        if self.mode == "basic":
            for name in (
                "foreground_gamma",
                "foreground_beta",
                "background_gamma",
                "background_beta",
            ):
                setattr(
                    self,
                    name,
                    self.add_weight(
                        shape=(channels,),
                        name=name,
                        initializer="zeros",
                        autocast=False,
                    ),
                )
            return
        spatial = [input_shape[i] for i in self._spatial_axes()]
        map_shape = (
            (input_shape[0], *spatial, 1)
            if self.data_format == "channels_last"
            else (input_shape[0], 1, *spatial)
        )
        attention_shape = map_shape[:-1] + (2,)
        if self.data_format == "channels_first":
            attention_shape = (input_shape[0], 2, *spatial)
        self.attention = self._conv(use_bias=False, name="attention")
        self.attention.build(attention_shape)
        self.gamma_conv = self._conv(use_bias=True, name="gamma_conv")
        self.gamma_conv.build(map_shape)
        self.beta_conv = self._conv(use_bias=True, name="beta_conv")
        self.beta_conv.build(map_shape)

    def _conv(self, use_bias, name):
        return keras.layers.Conv2D(
            1,
            self.kernel_size,
            padding="same",
            use_bias=use_bias,
            data_format=self.data_format,
            # The attention map decides the region by a threshold: under
            # mixed precision it is computed in float32, like statistics.
            dtype=(
                "float32"
                if self.compute_dtype in ("float16", "bfloat16")
                else self.dtype_policy
            ),
            name=name,
        )

    def _spatial_axes(self):
        return (1, 2) if self.data_format == "channels_last" else (2, 3)

    def _region_mask(self, region_mask, x):
        if region_mask is None:
            raise ValueError(
                "RegionNormalization(mode='basic') needs `region_mask`, the "
                "binary mask of the region. Received: region_mask=None"
            )
        mask = ops.convert_to_tensor(region_mask)
        shape = tuple(mask.shape)
        channel_index = 3 if self.data_format == "channels_last" else 1
        if len(shape) == 3:
            mask = ops.expand_dims(mask, channel_index)
        elif len(shape) != 4 or shape[channel_index] != 1:
            validation.fail(
                "region_mask",
                "a tensor of shape (batch, height, width, 1), (batch, 1, "
                "height, width) in channels_first, or (batch, height, width)",
                f"<tensor of shape {shape}>",
            )
        if mask.shape[0] is not None and x.shape[0] is not None:
            if mask.shape[0] != x.shape[0]:
                validation.fail(
                    "region_mask",
                    f"a mask per sample of the batch ({x.shape[0]})",
                    f"<tensor of shape {shape}>",
                )
        size = [x.shape[i] for i in self._spatial_axes()]
        mask = resize_nearest(mask, size, self._spatial_axes())
        return ops.cast(mask, x.dtype)

    def _learned_map(self, x):
        mean = statistics.mean(x, self.axis % 4, keepdims=True)
        top = ops.max(x, axis=self.axis, keepdims=True)
        attention = ops.sigmoid(
            self.attention(ops.concatenate([mean, top], axis=self.axis))
        )
        attention = ops.cast(attention, x.dtype)
        mask = ops.stop_gradient(ops.cast(attention >= self.threshold, x.dtype))
        return attention, mask

    def _region_affine(self, x, axis):
        """RN-B's `(2, channels)` table of gammas (region, rest) and its
        offset; zeros for RN-L, whose affine is pixel-wise."""
        channels = x.shape[axis]
        if self.mode == "learned":
            return (
                ops.zeros((2, channels), x.dtype),
                ops.zeros((channels,), x.dtype),
            )
        gammas = ops.stack(
            [
                ops.cast(self.foreground_gamma, x.dtype),
                ops.cast(self.background_gamma, x.dtype),
            ]
        )
        # Both offsets everywhere, as the official code adds them.
        offset = ops.cast(self.foreground_beta, x.dtype) + ops.cast(
            self.background_beta, x.dtype
        )
        return gammas, offset

    def call(self, inputs, region_mask=None, training=None):
        x = statistics.upcast(inputs)
        if self.mode == "basic":
            mask = self._region_mask(region_mask, x)
        else:
            if region_mask is not None:
                raise ValueError(
                    "RegionNormalization(mode='learned') learns its mask "
                    "and takes no `region_mask`. Received: a region_mask"
                )
            attention, mask = self._learned_map(x)
        axis = self.axis % len(x.shape)
        gammas, offset = self._region_affine(x, axis)
        outputs = statistics.region_normalize(
            x, mask, axis, gammas, offset, self.epsilon, self.synchronized
        )
        if self.mode == "learned":
            gamma = ops.cast(self.gamma_conv(attention), x.dtype)
            beta = ops.cast(self.beta_conv(attention), x.dtype)
            outputs = outputs * (1.0 + gamma) + beta
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mode": self.mode,
                "threshold": self.threshold,
                "kernel_size": self.kernel_size,
                "epsilon": self.epsilon,
                "data_format": self.data_format,
                "synchronized": self.synchronized,
            }
        )
        return config
