"""What a model card says about each dataset a run can train on (`data.name`): where its photographs come
from, the camera and resolution they were taken at, the terms they are shared under and how to cite them.
Facts from each dataset's own publication, as data beside the code that prints them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetFacts:
    title: str
    photographs: str  # how many, of whom, at what size
    camera: str
    licence: str
    citation: str | None = None


DATASETS = {
    "drive": DatasetFacts(
        "DRIVE (Digital Retinal Images for Vessel Extraction)",
        "40 photographs (20 train, 20 test) from a diabetic retinopathy screening programme in the Netherlands, "
        "565x584 px", "Canon CR5 non-mydriatic 3CCD, 45° field of view",
        "research use, after registration with the publishers (drive.grand-challenge.org)",
        "J. Staal, M. D. Abràmoff, M. Niemeijer, M. A. Viergever, B. van Ginneken. Ridge-based vessel segmentation "
        "in color images of the retina. IEEE Transactions on Medical Imaging 23(4):501-509, 2004."),
    "chase_db1": DatasetFacts(
        "CHASE_DB1 (Child Heart and Health Study in England)",
        "28 photographs, both eyes of 14 schoolchildren, 999x960 px, two human observers",
        "Nidek NM-200-D, 30° field of view", "CC BY 4.0 (Kingston University)",
        "M. M. Fraz, P. Remagnino, A. Hoppe, B. Uyyanonvara, A. R. Rudnicka, C. G. Owen, S. A. Barman. An ensemble "
        "classification-based approach applied to retinal blood vessel segmentation. IEEE Transactions on "
        "Biomedical Engineering 59(9):2538-2548, 2012."),
    "stare": DatasetFacts(
        "STARE (STructured Analysis of the REtina)", "20 photographs with vessel labels, 700x605 px",
        "TopCon TRV-50, 35° field of view", "free for research use (cecas.clemson.edu/~ahoover/stare)",
        "A. Hoover, V. Kouznetsova, M. Goldbaum. Locating blood vessels in retinal images by piecewise threshold "
        "probing of a matched filter response. IEEE Transactions on Medical Imaging 19(3):203-210, 2000."),
    "hrf": DatasetFacts(
        "HRF (High-Resolution Fundus image database)",
        "45 photographs (15 healthy, 15 diabetic retinopathy, 15 glaucoma), 3504x2336 px",
        "Canon CR-1, 45° field of view", "CC BY 4.0 (FAU Erlangen-Nürnberg)",
        "A. Budai, R. Bock, A. Maier, J. Hornegger, G. Michelson. Robust vessel segmentation in fundus images. "
        "International Journal of Biomedical Imaging 2013:154860, 2013."),
    "idrid": DatasetFacts(
        "IDRiD (Indian Diabetic Retinopathy Image Dataset), lesion segmentation part",
        "81 photographs with lesion masks (54 train, 27 test) from an eye clinic in Nanded, India, 4288x2848 px",
        "Kowa VX-10α, 50° field of view", "CC BY 4.0 (IEEE DataPort)",
        "P. Porwal, S. Pachade, R. Kamble, M. Kokare, G. Deshmukh, V. Sahasrabuddhe, F. Meriaudeau. Indian Diabetic "
        "Retinopathy Image Dataset (IDRiD): a database for diabetic retinopathy screening research. Data 3(3):25, "
        "2018."),
    "fives": DatasetFacts(
        "FIVES (Fundus Image dataset for Vessel Segmentation)",
        "800 photographs (600 train, 200 test; normal, AMD, diabetic retinopathy, glaucoma), 2048x2048 px",
        "see the dataset's publication", "CC BY 4.0 (figshare)",
        "K. Jin, X. Huang, J. Zhou, Y. Li, Y. Yan, Y. Sun, Q. Zhang, Y. Wang, J. Ye. FIVES: a fundus image dataset "
        "for artificial intelligence based vessel segmentation. Scientific Data 9:475, 2022."),
    "synthetic": DatasetFacts(
        "retina-seg's synthetic fundus images (retina_seg/data/synthetic.py)",
        "generated: drawn vessel trees and lesions on a fundus-like disc, no patient", "none: drawn, not photographed",
        "MIT, like retina-seg"),
}

UNKNOWN = DatasetFacts("your own photographs (data=folder)", "as collected", "not recorded by retina-seg",
                       "as agreed with whoever collected them")


def facts(name: str) -> DatasetFacts:
    return DATASETS.get(name, UNKNOWN)
