"""CEM500K (EMPIAR-10592): a folder of uint8 grayscale TIFF patches, unlabeled.

`CEM500K` is `ImageFolder` (see emlib/data/image_folder.py: splits, subsets,
manifests, crops) restricted to TIFF files, with CEM500K's patch size (224) as
the default. The paper pretrains on subsets of 50k, 100k and 200k images and
keeps 5000 for validation and 5000 for testing (Table 1). Edge patches of
CEM500K can be smaller than 224 in one dimension (224 x 138): such sides are
mirror-padded.
"""
from emlib.data.image_folder import ImageFolder
from emlib.data.images import TIFF_SUFFIXES


class CEM500K(ImageFolder):
    """CEM500K patches as float32 tensors (1, image_size, image_size) in [0, 1]; see `ImageFolder`."""

    suffixes = TIFF_SUFFIXES
    kind = "CEM500K"
