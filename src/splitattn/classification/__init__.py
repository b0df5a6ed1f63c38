"""Image classification: the released weights' ImageNet recipe, Fashion-MNIST and image folders, top-1/top-5."""

from .config import ClassificationConfig, load_classification_config
from .task import ClassificationTask, train_classifier

__all__ = ["ClassificationConfig", "ClassificationTask", "load_classification_config", "train_classifier"]
