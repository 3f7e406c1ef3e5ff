"""Training and fine-tuning: datasets and augmentation, the training loop, checkpoints, new heads.

    from npvit.train import train, TrainConfig, ArrayDataset
    history = train(model, ArrayDataset(images, labels), eval_ds, TrainConfig(epochs=10), out="run")
"""
from .data import ArrayDataset, ImageFolderDataset, TrainTransform, split
from .finetune import new_head, trainable_names
from .trainer import NonFiniteLossError, TrainConfig, evaluate, train

__all__ = ["train", "evaluate", "TrainConfig", "NonFiniteLossError", "ArrayDataset",
           "ImageFolderDataset", "TrainTransform", "split", "new_head", "trainable_names"]
