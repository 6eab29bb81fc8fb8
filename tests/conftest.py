import pytest
import torch

from tiny_models import calibration_tensors, photo_lr_crops


@pytest.fixture(scope="session")
def photo_lr() -> list[torch.Tensor]:
    return photo_lr_crops()


@pytest.fixture(scope="session")
def calibration() -> list[torch.Tensor]:
    return calibration_tensors()
