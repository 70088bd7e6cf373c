"""Where each source's files live under `{raw}/`, exactly as the official
archives unpack. Readers, the synthetic writer, the downloader and error
messages all take their paths from here, so they cannot drift apart."""

from __future__ import annotations

# JSRT (Shiraishi et al. 2000) + SCR lung masks (van Ginneken et al. 2006)
JSRT_IMAGE_DIR = "All247images"
JSRT_IMAGE_GLOB = "JPC*.IMG"
SCR_LEFT = "left lung"
SCR_RIGHT = "right lung"
SCR_FOLDS = ("fold1", "fold2")  # the SCR release's two folds: 124 and 123 images
JSRT_CLINICAL = ("CLNDAT_EN.txt", "CNNDAT_EN.TXT")

# Kermany et al. 2018, Mendeley Data v2 "ChestXRay2017.zip" (train, test); the
# widely redistributed copy adds val/ with 16 images moved out of train.
CHEX_ROOT = "chest_xray"
CHEX_SPLITS = ("train", "val", "test")
CHEX_CLASSES = {"NORMAL": 0, "PNEUMONIA": 1}
# The class labels of every source, by label value: what a classifier trained on it predicts.
# JSRT: JPCLN = lung nodule, JPCNN = none; Montgomery: MCUCXR_####_1 = TB; Shenzhen: CHNCXR_####_1 = TB.
CLASS_NAMES = {"jsrt": ("no nodule", "nodule"), "mcu": ("normal", "TB"), "chex": ("normal", "pneumonia"),
               "nihx": ("no finding", "pneumonia"), "shenzhen": ("normal", "TB")}
# Seed 003's datasets (its Table 3), built from the sources above with their own partitions:
# MCX = Montgomery, SCX = Shenzhen, JCX = JSRT, CCX = all three with 3 classes (normal, TB, nodule).
COHORTS = {"jcx": ("jsrt",), "mcx": ("mcu",), "scx": ("shenzhen",), "ccx": ("jsrt", "mcu", "shenzhen")}
CCX_LABELS = {"jsrt": (0, 2), "mcu": (0, 1), "shenzhen": (0, 1)}  # a source's label value -> CCX's class
CLASS_NAMES |= {"jcx": CLASS_NAMES["jsrt"], "mcx": CLASS_NAMES["mcu"], "scx": CLASS_NAMES["shenzhen"],
                "ccx": ("normal", "TB", "nodule")}


def sources(name: str) -> tuple[str, ...]:
    """The source datasets (processed files) a dataset or seed-003 cohort reads."""
    return COHORTS.get(name, (name,))


def source_of(image_id: str) -> str:
    """Ids are `<source>/<name>` (harmonise): the source a processed image lives in."""
    return image_id.split("/", 1)[0]


# The 16 images (file stems) the redistributed copy moved from Mendeley's train/ into val/.
KERMANY_VAL = {
    "NORMAL": tuple(f"NORMAL2-IM-{n}-0001" for n in (1427, 1430, 1431, 1436, 1437, 1438, 1440, 1442)),
    "PNEUMONIA": ("person1946_bacteria_4874", "person1946_bacteria_4875", "person1947_bacteria_4876",
                  "person1949_bacteria_4880", "person1950_bacteria_4881", "person1951_bacteria_4882",
                  "person1952_bacteria_4883", "person1954_bacteria_4886"),
}

# Montgomery County set (Jaeger et al. 2014)
MCU_ROOT = "MontgomerySet"
MCU_IMAGES = "MontgomerySet/CXR_png"
MCU_LEFT = "MontgomerySet/ManualMask/leftMask"
MCU_RIGHT = "MontgomerySet/ManualMask/rightMask"
MCU_READINGS = "MontgomerySet/ClinicalReadings"

# Shenzhen No. 3 People's Hospital set (Jaeger et al. 2014): the NLM archive ChinaSet_AllFiles.zip
# (662 images CHNCXR_####_Y.png, Y = 0 normal, 1 TB, and clinical readings). Its lung masks are a
# separate release (566 of the 662 images, both lungs in one 0/255 PNG per image, the image's size),
# unpacked beside it as mask/CHNCXR_####_Y_mask.png (found anywhere under the source folder).
SHENZHEN_ROOT = "ChinaSet_AllFiles"
SHENZHEN_IMAGES = "ChinaSet_AllFiles/CXR_png"
SHENZHEN_READINGS = "ChinaSet_AllFiles/ClinicalReadings"
SHENZHEN_MASKS = "mask"
SHENZHEN_MASK_SUFFIX = "_mask"

# NIH ChestX-ray14 (Wang et al. 2017)
NIH_LABEL_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
NIH_IMAGE_DIR = "images"

# CheXpert (Irvin et al. 2019): `CheXpert-v1.0[-small]/{train,valid}.csv` and the JPEGs under
# `{train,valid}/patientNNNNN/studyN/viewN_{frontal,lateral}.jpg`. The CSV's columns: Path, Sex, Age,
# Frontal/Lateral, AP/PA, then the 14 observations (1 positive, 0 negative, -1 uncertain, blank = not
# mentioned in the report).
CHEXPERT_ROOTS = ("CheXpert-v1.0-small", "CheXpert-v1.0")
CHEXPERT_CSVS = ("train.csv", "valid.csv")
CHEXPERT_OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)
# CheXlocalize (Saporta et al. 2022): radiologist masks of 10 pathologies on CheXpert's valid (234 images)
# and test (668) sets. Its release holds `CheXpert/{val,test}/…jpg` with `CheXpert/{val,test}_labels.csv`
# and `CheXlocalize/gt_segmentations_{val,test}.json` (pycocotools RLE at the image's native size) and
# `CheXlocalize/gt_annotations_{val,test}.json` (the radiologists' polygons).
CHEXLOCALIZE_PATHOLOGIES = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Airspace Opacity", "Edema", "Consolidation",
    "Atelectasis", "Pneumothorax", "Pleural Effusion", "Support Devices",
)
# CheXpert's label files call Airspace Opacity "Lung Opacity".
CHEXPERT_COLUMN = {p: ("Lung Opacity" if p == "Airspace Opacity" else p) for p in CHEXLOCALIZE_PATHOLOGIES}
CHEXLOCALIZE_IMAGES = "CheXpert"
CHEXLOCALIZE_MASKS = "CheXlocalize"
CHEXLOCALIZE_SPLITS = ("val", "test")
CHEXLOCALIZE_LABELS = "{split}_labels.csv"
CHEXLOCALIZE_SEGMENTATIONS = "gt_segmentations_{split}.json"
CHEXLOCALIZE_ANNOTATIONS = "gt_annotations_{split}.json"
# Phantoms only: the exact pathology masks of the CheXpert train phantoms, beside the native files, for
# scoring saliency and pseudo-labels where the truth is known (never read as training labels).
PHANTOM_TRAIN_MASKS = "phantom_masks_train.json"

# Files that official archives carry besides the inputs; recognised and skipped.
AUX_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
AUX_DIRS = {"__MACOSX"}

# The pneumonia phantoms of CheX and NIHX store their exact opacity masks here, mirroring the image's
# path under the source folder (`chest_xray/test/PNEUMONIA/x.jpeg` -> `phantom_lesions/chest_xray/test/
# PNEUMONIA/x.png`). No real source has such a folder; harmonise counts its files as skipped and only
# `evaluate` reads them, to score saliency maps against the truth.
PHANTOM_LESIONS = "phantom_lesions"


def phantom_lesion_path(root, image_rel):
    """Where the opacity mask of the image at `image_rel` (relative to the source folder `root`) lies."""
    from pathlib import Path

    return Path(root) / PHANTOM_LESIONS / Path(image_rel).with_suffix(".png")

EXPECTED = {
    "jsrt": (
        "{raw}/jsrt/" + JSRT_IMAGE_DIR + "/JPCLN001.IMG … JPCNN093.IMG (2048x2048 12-bit big-endian raw) and the SCR "
        "lung masks {raw}/jsrt/**/masks/{{" + SCR_LEFT + "," + SCR_RIGHT + "}}/<name>.gif (1024x1024 GIF)"
    ),
    "chex": "{raw}/chex/" + CHEX_ROOT + "/{{train,test}}/{{NORMAL,PNEUMONIA}}/*.jpeg, optionally val/ too "
            "(Kermany ChestXRay2017.zip unpacked)",
    "mcu": (
        "{raw}/mcu/" + MCU_IMAGES + "/MCUCXR_XXXX_Y.png with masks in {raw}/mcu/" + MCU_LEFT + "/ and "
        "{raw}/mcu/" + MCU_RIGHT + "/ (MontgomerySet.zip unpacked)"
    ),
    "shenzhen": (
        "{raw}/shenzhen/" + SHENZHEN_IMAGES + "/CHNCXR_XXXX_Y.png (ChinaSet_AllFiles.zip unpacked) and the lung "
        "masks {raw}/shenzhen/" + SHENZHEN_MASKS + "/CHNCXR_XXXX_Y" + SHENZHEN_MASK_SUFFIX + ".png (the separate "
        "mask release; any depth works)"
    ),
    "chexpert": (
        "{raw}/chexpert/" + CHEXPERT_ROOTS[0] + "/{{train,valid}}.csv with the JPEGs under {{train,valid}}/patientNNNNN/"
        "studyN/viewN_<frontal|lateral>.jpg (CheXpert-v1.0-small.zip unpacked; CheXpert-v1.0 works too)"
    ),
    "chexlocalize": (
        "{raw}/chexlocalize/" + CHEXLOCALIZE_IMAGES + "/{{val,test}}_labels.csv, the JPEGs under " + CHEXLOCALIZE_IMAGES
        + "/{{val,test}}/patientNNNNN/studyN/viewN_<view>.jpg and " + CHEXLOCALIZE_MASKS
        + "/gt_segmentations_{{val,test}}.json (or gt_annotations_{{val,test}}.json) (the CheXlocalize release unpacked)"
    ),
    "nihx": (
        "{raw}/nihx/" + NIH_LABEL_FILES[0] + " (or " + NIH_LABEL_FILES[1] + ") and the PNGs in {raw}/nihx/**/"
        + NIH_IMAGE_DIR + "/ (images_001.tar.gz … images_012.tar.gz unpacked)"
    ),
}


def expected(dataset: str, raw_dir) -> str:
    """Human description of what `dataset` needs where, for error messages."""
    return EXPECTED[dataset].format(raw=str(raw_dir).rstrip("/"))
