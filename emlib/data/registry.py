"""Every dataset emlib knows by name, one row each: the one home of a dataset's facts.

    name         what configs and results call it (`dataset=`)
    task         segmentation, restoration or pretraining
    folder       its sub-folder of a data root (and of the synthetic set)
    reader       the module that reads it (au, segmentation_folder, temimagenet, image_folder), with
    options      the reader's options for this dataset
    download     its recipe in `emlib.data.download.SOURCES` (`python -m emlib data download NAME`)
    citations    (text, DOI) pairs to cite when it is used (BioImage.IO packages cite them)
    licence      its terms, as its record states them ("" where emlib has not checked them)
    paper_table  the paper's table of its results (read from emlib/paper_tables, not stored here)

The readers' own tables (`AU_DATASETS`, `NANOPARTICLE_DATASETS`), catalog's folder names,
the export's citations and the notebooks' provenance lines are views of these rows.
"""
from dataclasses import dataclass, field

from emlib import paper

SYTWU = (("Sytwu K, Groschner C, Scott MC (2022). Understanding the Influence of Receptive Field and Network "
          "Complexity in Neural Network-Guided TEM Image Analysis. Microscopy and Microanalysis 28(6)",
          "10.48550/arXiv.2204.04250"),
         ("Sytwu K et al. Au nanoparticle HRTEM images and labels (Zenodo record 6419024)", "10.5281/zenodo.6419024"))
GROSCHNER = (("Groschner CK, Choi C, Scott MC (2021). Machine Learning Pipeline for Segmentation and Defect "
              "Identification from High-Resolution Transmission Electron Microscopy Data. Microscopy and "
              "Microanalysis 27(3). Data: Zenodo record 3755011", "10.5281/zenodo.3755011"),)
TEMIMAGENET = (("Lin R, Zhang R, Wang C, Yang X-Q, Xin HL (2021). TEMImageNet training library and AtomSegNet "
                "deep-learning models for high-precision atom segmentation, localization, denoising, and "
                "deblurring of atomic-resolution images. Scientific Reports 11, 5386", "10.1038/s41598-021-84499-w"),)
EMPS = (("Yildirim B, Cole JM (2021). Bayesian Particle Instance Segmentation for Electron Microscopy Image "
         "Quantification. J. Chem. Inf. Model. 61 (EMPS dataset)", "10.1021/acs.jcim.0c01455"),)
CEM500K = (("Conrad R, Narayan K (2021). CEM500K, a large-scale heterogeneous unlabeled cellular electron "
            "microscopy image dataset for deep learning. eLife 10, e65894 (EMPIAR-10592)", "10.7554/eLife.65894"),)


@dataclass(frozen=True)
class Dataset:
    """One row of DATASETS (see the module docstring)."""

    name: str
    task: str
    folder: str
    reader: str
    options: dict = field(default_factory=dict)
    download: str | None = None
    citations: tuple = ()
    licence: str = ""

    @property
    def paper_table(self) -> int | None:
        return paper.table_numbers().get(self.name)


def _au(name, **options):
    source = options["source"]
    return Dataset(name, "segmentation", "au", "au", options, f"au-{source}", SYTWU if source == "sytwu" else GROSCHNER)


DATASETS = {d.name: d for d in (
    _au("Au2.2nm", source="sytwu", tag="Au_2p2nm_330kx_423e", spike_threshold=1500),
    _au("Au5nm", source="sytwu", tag="Au_5nm_330kx_423e", spike_threshold=1500),
    _au("Au10nm", source="sytwu", tag="Au_10nm_330kx_425e", spike_threshold=1500),
    _au("Au20nm", source="sytwu", tag="Au_20nm_87kx_16e", spike_threshold=400),
    _au("Au5nmV1", source="groschner", images_file="Au_Bal_MedFilt_cutimages_20190726.h5",
        maps_file="Au_Bal_unFilt_cutimages_20190423_maps.h5", spike_threshold=None),
    # 40 bright-field TEM images, train/ and test/ folders
    Dataset("msa_segtrack", "segmentation", "nanoparticles/msa_segtrack", "segmentation_folder", dict(masks="binary"),
            "msa_segtrack", licence="msa-em/microscopy-seg-track (CC-BY-4.0)"),
    # 465 TEM/SEM images, 16-bit instance maps, train.csv / test.csv
    Dataset("emps", "segmentation", "nanoparticles/emps", "segmentation_folder", dict(masks="instances"), "emps", EMPS,
            "by256/emps (MIT; pixels from published figures: cite EMPS and the sources), Yildirim & Cole 2021"),
    Dataset("TEMImageNet", "restoration", "temimagenet", "temimagenet", {}, "temimagenet", TEMIMAGENET),
    Dataset("CEM500K", "pretraining", "cem500k", "image_folder", {}, "cem500k", CEM500K),
    # the real cellular EM patches beside the repository (../shared/data/real, see its PROVENANCE.md)
    Dataset("cellular_em", "pretraining", "cellular_em", "image_folder",
            licence="mussel, CREMI: HeracleBT/vEMstitch (CC0); ISBI 2012: zhixuhao/unet (challenge data, research use); "
                    "CEM500K: volume-em/cem-dataset (BSD-3-Clause)"),
)}


def read_by(reader: str) -> dict:
    """{name: options} of the datasets one reader reads (e.g. AU_DATASETS = read_by("au"))."""
    return {d.name: d.options for d in DATASETS.values() if d.reader == reader}
