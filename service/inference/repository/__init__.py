"""The model repository: several models and versions, loaded, swapped and unloaded while serving.

scan.py (what the directory holds) -> policy.py (which versions to serve) -> registry.py (loaded versions,
leases, the atomic switch, polling) -> shared.py (the same set across worker processes).
docs/REPOSITORY.md is the user's reference.
"""

from service.inference.repository.policy import ModelConfig, VersionPolicy
from service.inference.repository.registry import Lease, ModelRegistry, Outcome, OverrideStore, VersionStatus
from service.inference.repository.scan import RepositorySource, SingleArtifactSource
from service.inference.repository.shared import SharedOverrides, WorkerBoard
