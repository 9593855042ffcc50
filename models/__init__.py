"""bnserve's shared contract: architectures, BN helpers and the artifact format."""

__version__ = "0.1.0"

from models.artifact import Artifact, load_artifact, save_artifact  # noqa: E402
from models.bn import batchnorm_layers, bn_fingerprint, fold_batchnorm, freeze, model_bn_fingerprint  # noqa: E402
from models.cnn import CNNConfig, cnn_layers  # noqa: E402
from models.errors import *  # noqa: E402,F403
from models.layers import LayerSpec, build_network  # noqa: E402
from models.manifest import FORMAT_VERSION, Manifest  # noqa: E402
from models.mlp import MLPConfig, mlp_layers  # noqa: E402
