import os

import pytest
import torch

# Tests run on the CPU with few threads: the CI machine has 2 cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture()
def one_thread():
    """Tiny tensors and models: one thread is faster than two on the shared CI cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    """Four scikit-image photos, 96x96 PNGs: a training folder for `zoo fit` runs."""
    from skimage import data

    from zoo.io import write_image

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        image = torch.from_numpy(getattr(data, name)()[..., :3].copy()).permute(2, 0, 1).float() / 255
        small = torch.nn.functional.interpolate(image[None], size=(96, 96), antialias=True, mode="bilinear")[0]
        write_image(folder / f"{name}.png", small.clamp(0, 1))
    return folder
