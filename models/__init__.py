"""bnserve's shared contract: architectures, BN helpers and the artifact format."""

__version__ = "0.1.0"

from models.artifact import Artifact, load_artifact, save_artifact
from models.bn import batchnorm_layers, bn_fingerprint, fold_batchnorm, freeze, model_bn_fingerprint
from models.cnn import CNNConfig, cnn_layers
from models.errors import *  # noqa: F403
from models.layers import LayerSpec, build_network
from models.manifest import FORMAT_VERSION, Manifest
from models.mlp import MLPConfig, mlp_layers
