"""eoseg configuration: the one file you edit.

Every script reads these names. Override them without editing this file:
    python training.py --config my_run.py          # a Python file assigning some of these names
    python training.py TRAIN_MINUTES=30 DEVICE=cuda # KEY=VALUE, after the other arguments
The effective configuration is written as JSON beside each script's outputs.

The defaults below are the training recipe for your own data. DATASET picks a preset
from PRESETS at the end: the preset's names replace the defaults, and --config /
KEY=VALUE override both. DATASET = "sample" here, so the scripts run without arguments
on the synthetic sample (make_sample.py) with the demo's recipe; a --config file that does not name a
DATASET applies no preset. To bring your own data, write a --config file (or add a
preset) with your folders, tile ids, bands and classes: it trains with the recipe below.
"""

# ---------------------------------------------------------------- dataset
DATASET = "sample"  # the preset applied over these defaults, a key of PRESETS: "sample", "sample_fusion", "vaihingen", "vaihingen_fusion", "potsdam" (or your own); "" = none. A --config file that does not name one applies none: config.py's defaults, the recipe for your own data
DATA_ROOT = "data"  # folder holding the collections below; patterns are relative to it
IMAGE_PATTERN = "top/top_mosaic_09cm_area{id}.tif"  # orthophoto of tile {id}; every pattern may also name {part[0]}, {part[1]}, ...: the id's pieces between underscores, with a format spec ({part[0]:0>2}: tile 2_10's piece 2 as 02); id globs find ids by IMAGE_PATTERN's {id}
GT_COLOR_PATTERN = "gts_for_participants/top_mosaic_09cm_area{id}.tif"  # colour-coded ground truth
GT_ERODED_PATTERN = "gts_eroded_for_participants/top_mosaic_09cm_area{id}_noBoundary.tif"  # colour GT, boundaries black ("" if none)
LABEL_PATTERN = "labels/top_mosaic_09cm_area{id}.tif"  # numeric label maps (written by convert_gt.py), or polygons; without {id}: one georeferenced file for all tiles
DSM_PATTERN = "dsm/dsm_09cm_matching_area{id}.tif"  # elevation model ("" if none); not used by the optical SegNet
NDSM_PATTERN = "ndsm/ndsm_09cm_matching_area{id}.tif"  # normalised DSM: height above the ground in metres, float32 ("" if none); make_sample.py writes it, make_composite.py reads it
COMPOSITE_PATTERN = "composite/composite_area{id}.tif"  # 3-band uint8 composite (DSM, nDSM, NDVI) that make_composite.py writes; stack it with EXTRA_SOURCES
BANDS = [1, 2, 3]  # 1-based band indices read from each image, in this order
BAND_NAMES = ["IR", "R", "G"]  # what those bands are; recorded in every artifact. Previews draw the bands named red, green and blue (R/Red, G, B; Sentinel-2 B04, B03, B02) as such, else near-infrared (IR/NIR, B08), red, green in false colour, else the first three
TRAIN_IDS = ["1", "2", "3", "4", "5", "6"]  # tiles to train on: tile ids, or globs over the ids of the images IMAGE_PATTERN finds ("austin*", "[0-9]*"; natural order); "!glob" takes the ids it matches out of those before it. Likewise TEST_IDS, OFFICIAL_TEST_IDS, VAL_IDS
TEST_IDS = ["7", "8"]  # held-out tiles (validation / evaluation)
OFFICIAL_TEST_IDS = []  # benchmark test tiles without public ground truth ("official_test" split)
HOLDOUT_BLOCK = 1024  # a tile in TRAIN_IDS and also in TEST_IDS or VAL_IDS (one scene to train and test on) is cut into blocks of this many px, at least 2 x PATCH_SIZE; one in HOLDOUT_EVERY is held out: never trained on, and the only pixels of the tile its test scores count. 0 = no split: such a tile is trained on and scored whole (its scores flatter the model)
HOLDOUT_EVERY = 4  # 1 block in this many is held out, along diagonals across the scene (4: a quarter; 2: a checkerboard)

# ---------------------------------------------------------------- classes
CLASS_NAMES = ["impervious surfaces", "building", "low vegetation", "tree", "car", "clutter"]  # class ids 0, 1, ... in this order
PALETTE = [  # RGB colour of each class in the colour-coded ground truth, same order
    [255, 255, 255],  # impervious surfaces: white
    [0, 0, 255],  # building: blue
    [0, 255, 255],  # low vegetation: cyan
    [0, 255, 0],  # tree: green
    [255, 255, 0],  # car: yellow
    [255, 0, 0],  # clutter: red
]
IGNORE_COLOR = [0, 0, 0]  # colour of undefined pixels (black boundaries of the eroded GT); None if the ground truth has none (e.g. black/white building masks, where black is a class)
IGNORE_LABEL = 255  # their numeric id: excluded from the loss and the metrics

# ---------------------------------------------------------------- label values, vector labels, other grids
LABEL_VALUES = {}  # raw value of the label rasters (or of VECTOR_CLASS_FIELD) -> class id or "ignore": {0: 0, 255: 1} for 0/255 building masks, {0: "ignore", 1: 0, 2: 1, ...} for codes 1..n with 0 as no-data, {10: 0, 20: 1, ...} for sparse codes; {} = the values are the class ids (IGNORE_LABEL ignored)
LABEL_TOLERANCE = 0  # labels saved as JPEG or resampled: a colour of the colour ground truth within this many levels (in each of R, G, B) of one PALETTE colour or IGNORE_COLOR, or a raw label value within this many of one LABEL_VALUES value, reads as it; 0 = exact only. At most half the gap between the two closest of those colours (values), less one: 127 for the ISPRS colours or 0/255 masks
UNKNOWN_LABELS_TO_IGNORE = False  # label values LABEL_VALUES does not name become IGNORE_LABEL instead of an error
VECTOR_CLASS_FIELD = ""  # vector labels (a LABEL_PATTERN ending .geojson, .gpkg, .shp, .fgb, ...; without {id}: one file for all tiles): the attribute holding each polygon's class value, mapped through LABEL_VALUES ("" = every polygon is VECTOR_POLYGON_CLASS); only polygons label pixels (points and lines are left out, with a note)
VECTOR_OVERLAP = "ignore"  # pixels that polygons of different classes share: "ignore" (IGNORE_LABEL, whatever the file's order), "smallest" (the smaller polygon's class: buildings over the land use around them), "last" (the class of the polygon later in the file, as a GIS draws them); a note counts such overlaps
VECTOR_LAYER = ""  # the layer of a vector label file (a GeoPackage, ...) that holds the polygons ("" = its only layer; a file with several is refused)
VECTOR_POLYGON_CLASS = 1  # class id of every polygon when VECTOR_CLASS_FIELD is ""
VECTOR_BACKGROUND_CLASS = 0  # class id of the pixels outside every polygon (IGNORE_LABEL: unlabelled)
VECTOR_BOUNDARY = "centre"  # which pixels a polygon labels: "centre" (centre inside), "all_touched" (every pixel it touches; under VECTOR_OVERLAP "ignore" an edge neighbouring polygons share goes, pixel by pixel, to the one holding the centre, under the others as they order the polygons), "ignore_band" (centre, then IGNORE_LABEL along every edge, like the ISPRS eroded ground truth)
VECTOR_BOUNDARY_WIDTH = 3.0  # width of that ignore band, in pixels, across the edge (the ISPRS eroded ground truth's, a disc of 3 px radius, is about 6)
GRID_RESAMPLING = "bilinear"  # continuous rasters on another grid than their image (DSM, nDSM, EXTRA_SOURCES without a "resampling" key) are warped onto it with this: "nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode"; label rasters always take "nearest"

# ---------------------------------------------------------------- inputs
NORM_MEAN = [0.0, 0.0, 0.0]  # per band, subtracted from the raw pixel values
NORM_STD = [255.0, 255.0, 255.0]  # per band, divides after the mean (255 maps uint8 to 0..1 as the method does)
EXTRA_SOURCES = []  # more inputs stacked after the image's BANDS, in this order; each a dict. A co-registered raster per tile: {"pattern": "ndsm/ndsm_09cm_matching_area{id}.tif", "bands": [1], "band_names": ["nDSM"], "mean": [0.0], "std": [10.0]} (pattern under DATA_ROOT, mean/std per band on the raw scale; optional "resampling", default GRID_RESAMPLING). A computed band: {"derived": "ndvi"}, NDVI = (nir - red) / (nir + red), 0 where the sum is 0, with optional "red"/"nir" (names of stacked raster bands; default RED_BAND, NIR_BAND), "band_names" (default ["NDVI"]), "mean" ([0.0]), "std" ([1.0])
RED_BAND = "R"  # name of the red band (in BAND_NAMES, or an extra source's band_names) for NDVI
NIR_BAND = "IR"  # name of the near-infrared band for NDVI, likewise
COMPOSITE_NDSM_MAX = 30.0  # make_composite.py: metres of nDSM mapped to 255 (higher is clipped); the DSM is stretched min..max per tile, NDVI -1..1 to 0..255

# ---------------------------------------------------------------- patches (extract_images.py, create_lmdb.py)
PATCH_SIZE = 256  # side of the square training patches, in pixels
TRAIN_STRIDE = 128  # step between training patches (< PATCH_SIZE gives overlap)
FLIPS = True  # also write horizontally and vertically flipped training patches
ROTATIONS = []  # extra training patches rotated by these angles, any of 90, 180, 270
PATCHES_DIR = "runs/patches"  # where extract_images.py writes patches and manifest
LMDB_DIR = "runs/lmdb"  # where create_lmdb.py writes train.lmdb and test.lmdb
SHUFFLE_SEED = 1337  # fixed seed for the order of training records

# ---------------------------------------------------------------- model
MODEL = "unet"  # a name of the model registry (eoseg.models.MODELS): "segnet" (all bands stacked: early fusion), "segnet_multiscale" (+ predictions at 1/8, 1/4, 1/2 scale, deep supervision), "fusenet" (optical and auxiliary encoders summed at each block), "segnet_late_fusion" (a SegNet per source, residual correction), "unet" (U-Net decoder on a ResNet encoder), "unetformer" (UNetFormer: ResNet encoder, global-local transformer decoder, auxiliary head in training)
STREAM_BANDS = 0  # two-stream models (fusenet, segnet_late_fusion): how many of the stacked bands, from the first, feed the optical stream; the rest feed the auxiliary one (0 = the image's BANDS)
MODEL_WIDTH = 1.0  # channel multiplier: 1.0 is the published network (the width pretrained ENCODER_WEIGHTS fit), smaller is faster on CPU
ENCODER = "resnet18"  # unet, unetformer: their ResNet encoder, "resnet18", "resnet34" or "resnet50" (the SegNets' encoder is always VGG16)
INIT_WEIGHTS = ""  # eoseg weights (.pt/.safetensors) to start the whole network from: fine-tuning a trained model on your tiles, with its classes, bands and normalisation and the config's MODEL, MODEL_WIDTH and ENCODER; a new run (schedule and optimizer start afresh); "" = none
ENCODER_WEIGHTS = ""  # local pretrained state dict (.pth/.pt/.safetensors) to initialise the encoder(s) ("" = random): torchvision's vgg16_bn for the SegNets, torchvision's or timm's resnet18/34/50 (keys may sit under one prefix, e.g. "backbone.") for unet/unetformer; every layer checked, first layers adapted to other band counts, not reset

# ---------------------------------------------------------------- training (training.py)
TRAIN_SOURCE = "lmdb"  # "lmdb": the packed patches, read from disk; "tiles": random crops straight from the tiles, all held in memory (refused where they would not fit)
BATCH_SIZE = 8  # patches per step and per process (under torchrun the step sees BATCH_SIZE x processes)
ITERATIONS = 20000  # optimisation steps (unless TRAIN_MINUTES sets a time budget instead; given after a preset's budget, as the sample's, it is refused: set TRAIN_MINUTES=0 with it)
BASE_LR = 0.001  # learning rate of the decoder
ENCODER_LR_FACTOR = 1.0  # the encoder learns at BASE_LR * this (the method: half)
MOMENTUM = 0.9  # SGD momentum
WEIGHT_DECAY = 0.01  # weight decay: an L2 penalty under SGD, decoupled under AdamW
LR_STEPS = []  # LR_SCHEDULE="step": iterations at which the learning rate is divided by 10
AUX_LOSS_WEIGHT = 1.0  # weight of each auxiliary output's loss (multi-scale predictions, late fusion's streams) beside the final output's
CLASS_WEIGHTS = []  # per-class loss weights ([] = all equal)
MEDIAN_FREQUENCY_WEIGHTS = False  # weight the loss by median frequency balancing of the training labels (SegNet's weighting), instead of CLASS_WEIGHTS
TRAIN_MINUTES = 0.0  # train for this many minutes instead of ITERATIONS steps (0 = off): time of training steps, validation and checkpoints not counted; the LR schedule is laid over the budget; --resume continues the same budget
OPTIMIZER = "adamw"  # "sgd" (the method: SGD with MOMENTUM) or "adamw" (AdamW); both with WEIGHT_DECAY and the encoder at BASE_LR * ENCODER_LR_FACTOR
LR_SCHEDULE = "poly"  # "step": LR divided by 10 at LR_STEPS (the method; under TRAIN_MINUTES at the same fractions LR_STEPS / ITERATIONS of the budget); "poly" or "cosine": decay to BASE_LR * FINAL_LR_FACTOR over ITERATIONS or TRAIN_MINUTES
WARMUP_FRACTION = 0.05  # the learning rate ramps up linearly from 0 over this fraction of ITERATIONS or TRAIN_MINUTES, then follows LR_SCHEDULE over the rest (0 = no warm-up)
POLY_POWER = 0.9  # LR_SCHEDULE="poly": LR = BASE_LR * (1 - progress) ** POLY_POWER (above the final LR)
FINAL_LR_FACTOR = 0.0  # LR_SCHEDULE "poly" and "cosine": the learning rate at the end, as a fraction of BASE_LR
LOSS = "ce_dice"  # "ce": cross-entropy (weighted by CLASS_WEIGHTS / MEDIAN_FREQUENCY_WEIGHTS); "ce_dice": that + DICE_WEIGHT x soft Dice; "focal": focal loss (FOCAL_GAMMA, class weights as alpha); "ohem": weighted cross-entropy of the hardest OHEM_FRACTION of pixels. IGNORE_LABEL pixels count in none
DICE_WEIGHT = 1.0  # LOSS="ce_dice": weight of the soft Dice loss (mean over the classes present in the batch) beside cross-entropy
FOCAL_GAMMA = 2.0  # LOSS="focal": focusing exponent (0 = cross-entropy)
OHEM_FRACTION = 0.25  # LOSS="ohem": fraction of the labelled pixels of a batch, the hardest, that the loss keeps
RANDOM_FLIPS = True  # random flips / 90-degree rotations of each training patch
COLOR_JITTER = 0.2  # training: each patch's image BANDS (not EXTRA_SOURCES), after normalisation, are multiplied by one random 1 ± this (light brighter or darker; one gain for every band, so that their ratios stay) and shifted by one random ± this times each band's spread (haze); 0 = off (the method's recipe). 0.2 scored 2.1-4.2 points of mean F1 above 0 in each of two seeds on the real Vaihingen and Potsdam crops and the WHU cities (bench/RESULTS.md)
RANDOM_SCALE = 0.0  # training: each patch zoomed by a random factor between 1 / (1 + this) and 1 + this (0.25: 0.8 to 1.25; image bilinear, labels nearest), then cropped, or padded with unlabelled pixels, back to PATCH_SIZE: objects at other sizes, as other pixel sizes or cities show them; 0 = off (the method). 0.5 and 0.25 cost 1.8-3.7 points of mean F1 across the WHU cities at 250 steps (bench/RESULTS.md)
SNAPSHOT_EVERY = 1000  # write a checkpoint every N iterations (and at the end)
LOG_EVERY = 50  # append the loss to the CSV log every N iterations
VAL_EVERY = 1000  # label the validation tiles and log OA, mean F1, mean IoU every N iterations (0 = never); the best by mean F1 is kept as TRAIN_DIR/checkpoints/best.pt
VAL_IDS = []  # tiles to validate on ([] = TEST_IDS, as the method does)
NUM_WORKERS = 0  # DataLoader worker processes per training process
SEED = 0  # seed of weight initialisation, sample order and augmentation
PRECISION = "auto"  # training: "auto": "bfloat16" where the device computes it natively (CPUs with amx_bf16 or avx512_bf16, CUDA GPUs of compute capability 8.0+), else "float32"; or "float32"; "bfloat16"; "float16" (GPUs; with gradient scaling). bfloat16 and float16 autocast, with float32 master weights. On an AMX CPU the demo's network trained in bfloat16 ends within 0.2 points of mean F1 of float32 at equal steps, 2.2-2.5x sooner (bench/RESULTS.md)
CHANNELS_LAST = None  # channels-last memory layout in training: None = where PRECISION resolves to bfloat16/float16 (faster there), not in float32 (slower on CPU); True or False to choose
COMPILE = False  # torch.compile the network: faster steps after minutes of compiling (needs a C++ compiler)
DETERMINISTIC = False  # deterministic kernels: a resumed run repeats the uninterrupted one's losses (bit for bit on CPU); slower on GPU
DEVICE = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ... (under torchrun: "auto", "cuda" or "cpu")
REUSE_FREED_MEMORY = True  # CPU (training.py, inference.py): keep freed memory for reuse instead of mapping large blocks afresh for each batch: a full SegNet trains and labels 10-25% faster, with a higher peak memory (~40% when labelling)
TRAIN_DIR = "runs/train"  # checkpoints, CSV log, loss plot
MODEL_FILE = "models/model.pt"  # the trained weights training.py writes and inference.py reads

# ---------------------------------------------------------------- inference (inference.py)
WINDOW = 256  # side of the sliding window
STRIDE = 128  # step of the sliding window (< WINDOW averages overlapping scores)
INFER_BATCH_SIZE = 8  # windows per forward pass
INFER_DIR = "runs/inference"  # label maps, colour maps, metrics and plots
BLEND = "gaussian"  # overlapping windows: "uniform" average (the method) or "gaussian" (centre counts most: no seams)
TTA = []  # test-time augmentation, averaged: any of "fliplr", "flipud", "rot90", "rot180", "rot270"
INFER_PRECISION = "auto"  # "auto": "bfloat16" where the device computes it natively (as PRECISION), else "float32"; or one of those, or "float16" (GPUs): what the network runs in (bfloat16 weights and activations after batch-norm folding, the layers that read the image at 16 significant bits; float16 under autocast), the scores blended in float32
INFER_OPTIMIZE = True  # fold batch norm into the convolutions and use channels_last (same labels, faster)
INFER_COMPILE = False  # torch.compile the model (slow start, can pay off on large rasters)
INFER_BLOCK_ROWS = 512  # rows labelled per block: memory grows with this times the raster width
INFER_PIXEL_SIZE = None  # the pixel size georeferenced images are labelled at where theirs differs by over 10%, the labels brought back onto the image's grid: None = the training imagery's (as the weights record it) for images with finer pixels, coarser ones as they are; a size in metres (for weights that record none, as Caffe's); or "image": every image as it is
INFER_VALUE_CHECK = True  # refuse an image whose values are 3 times those the weights were trained on or more, or a third or less (another scale or encoding: 12 against 16 bits, reflectance 0..1 against 0..10000); a note from 1.5 times (or two thirds); an EXTRA_SOURCES raster 10 times off, or one far from 0 against its spread (a DSM) whose mean lies 3 of its training standard deviations away (another height datum), is refused too; False: label it anyway, with the note
INFER_VALUE_SCALE = 1.0  # multiply the images' BANDS values by this before the normalisation (inference, validation): 0.0625 labels 16-bit imagery with weights trained on 12-bit values of the same kind; checked as INFER_VALUE_CHECK says, and then images of another data type are taken too
NODATA_ZERO = False  # also treat pixels that are 0 in every band as nodata (besides the raster's own mask); in training and labelling alike (patches record it)
WRITE_COLOR = True  # also write NAME_color: the labels in the palette's colours
WRITE_PROBABILITIES = False  # also write NAME_probabilities: one uint8 band (0-255) per class
WRITE_PREVIEW = True  # also write NAME_preview.png: image, ground truth, prediction, errors (downsampled)
INFER_ENGINE = "torch"  # "torch", or "onnxruntime" (the model exported to ONNX in memory; WINDOW a multiple of 32)
WRITE_COG = False  # publish GeoTIFF outputs as Cloud-Optimized GeoTIFFs (tiled, with overviews)
WRITE_POLYGONS = ""  # also write class polygons of georeferenced outputs: ".gpkg" (GeoPackage) or ".geojson"; "" = none
POLYGON_SIMPLIFY = 0.0  # simplify polygon outlines by this tolerance, in CRS units (0 = exact pixel edges)
POLYGON_MIN_AREA = 0.0  # drop polygons and holes smaller than this, in CRS units squared

# ---------------------------------------------------------------- presets
_ISPRS_VAIHINGEN_TEST = ["2", "4", "6", "8", "10", "12", "14", "16", "20", "22", "24", "27", "29", "31", "33", "35", "38"]
_ISPRS_POTSDAM_TEST = ["2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14", "5_15", "6_13", "6_14", "6_15", "7_13"]

# The method's choices (Audebert et al.): SegNet, SGD with momentum, the learning rate divided
# by 10 at LR_STEPS, cross-entropy, flips and rotations but no colour jitter, overlapping windows
# averaged uniformly.
_METHOD_RECIPE = dict(
    MODEL="segnet", OPTIMIZER="sgd", ENCODER_LR_FACTOR=0.5, WEIGHT_DECAY=5e-4,
    LR_SCHEDULE="step", WARMUP_FRACTION=0.0, LOSS="ce", COLOR_JITTER=0.0, BLEND="uniform",
)
# The method's recipe scaled down for 2 CPU cores (the demo's until it took the own-data recipe):
# bench/fusion.py compares fusion networks with it.
_SAMPLE_METHOD_RECIPE = dict(
    _METHOD_RECIPE,
    PATCH_SIZE=128, TRAIN_STRIDE=64,
    MODEL_WIDTH=0.25, BATCH_SIZE=16, ITERATIONS=600, BASE_LR=0.05, LR_STEPS=[400, 520],
    SNAPSHOT_EVERY=300, LOG_EVERY=10, VAL_EVERY=300,
    WINDOW=128, STRIDE=64,
)
# The ISPRS benchmarks': the method's recipe as published, 50 epochs of 10 000 patches
# (1000 steps of 10), LR / 10 after epochs 25, 35, 45.
_ISPRS_RECIPE = dict(
    _METHOD_RECIPE,
    PATCH_SIZE=256, TRAIN_STRIDE=128, FLIPS=True, ROTATIONS=[90, 180, 270],
    MODEL_WIDTH=1.0, BATCH_SIZE=10, ITERATIONS=50000, BASE_LR=0.01, LR_STEPS=[25000, 35000, 45000],
    SNAPSHOT_EVERY=5000, LOG_EVERY=50, VAL_EVERY=5000,
    WINDOW=256, STRIDE=128, INFER_BATCH_SIZE=10,
)

_VAIHINGEN = dict(
    DATA_ROOT="data/Vaihingen",
    IMAGE_PATTERN="top/top_mosaic_09cm_area{id}.tif",
    GT_COLOR_PATTERN="gts_for_participants/top_mosaic_09cm_area{id}.tif",
    GT_ERODED_PATTERN="gts_eroded_for_participants/top_mosaic_09cm_area{id}_noBoundary.tif",
    LABEL_PATTERN="labels/top_mosaic_09cm_area{id}.tif",
    DSM_PATTERN="dsm/dsm_09cm_matching_area{id}.tif",
    BANDS=[1, 2, 3],
    BAND_NAMES=["IR", "R", "G"],
    TRAIN_IDS=["1", "3", "23", "26", "7", "11", "13", "28", "17", "32", "34", "37"],
    TEST_IDS=["5", "21", "15", "30"],
    OFFICIAL_TEST_IDS=_ISPRS_VAIHINGEN_TEST,
    PATCHES_DIR="runs/vaihingen/patches", LMDB_DIR="runs/vaihingen/lmdb",
    TRAIN_DIR="runs/vaihingen/train", MODEL_FILE="models/vaihingen_segnet.pt",
    INFER_DIR="runs/vaihingen/inference",
    **_ISPRS_RECIPE,
)

PRESETS = {
    # The demo: synthetic urban tiles in the Vaihingen layout, made by make_sample.py (not a
    # benchmark), and the own-data recipe above on them: 128 px patches (the tiles are 512 px),
    # trained for a time budget, so that the demo takes the same few minutes on every machine
    # (where the CPU computes bfloat16, that time holds more steps).
    "sample": dict(
        DATA_ROOT="data/sample",
        PATCH_SIZE=128, TRAIN_STRIDE=64, BATCH_SIZE=16, TRAIN_MINUTES=5.0,
        SNAPSHOT_EVERY=200, LOG_EVERY=10, VAL_EVERY=200,
        WINDOW=128, STRIDE=64,
        PATCHES_DIR="runs/sample/patches", LMDB_DIR="runs/sample/lmdb",
        TRAIN_DIR="runs/sample/train", MODEL_FILE="models/sample_unet.pt",
        INFER_DIR="runs/sample/inference",
    ),
    # The sample with its nDSM (heights above the ground, metres) as a second input, in FuseNet:
    # an IRRG encoder and an nDSM encoder summed at every block, trained with the method's
    # recipe scaled down (see bench/fusion.py).
    "sample_fusion": dict(
        _SAMPLE_METHOD_RECIPE,
        DATA_ROOT="data/sample",
        EXTRA_SOURCES=[{"pattern": NDSM_PATTERN, "bands": [1], "band_names": ["nDSM"], "mean": [0.0], "std": [10.0]}],
        MODEL="fusenet",
        PATCHES_DIR="runs/sample_fusion/patches", LMDB_DIR="runs/sample_fusion/lmdb",
        TRAIN_DIR="runs/sample_fusion/train", MODEL_FILE="models/sample_fusenet.pt",
        INFER_DIR="runs/sample_fusion/inference",
    ),
    # ISPRS 2D Semantic Labeling, Vaihingen: IRRG orthophotos (9 cm), as unpacked from the
    # ISPRS download into data/Vaihingen. Splits of the method (Audebert et al.).
    "vaihingen": _VAIHINGEN,
    # Vaihingen IRRG plus the method's composite (DSM, nDSM, NDVI; make_composite.py writes it
    # from the DSMs and the normalised DSMs that ISPRS distributes separately, put at
    # NDSM_PATTERN) in FuseNet: an IRRG encoder and a composite encoder summed at every block.
    "vaihingen_fusion": dict(
        _VAIHINGEN,
        EXTRA_SOURCES=[{"pattern": COMPOSITE_PATTERN, "bands": [1, 2, 3],
                        "band_names": ["DSM", "nDSM", "NDVI"], "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}],
        MODEL="fusenet",
        PATCHES_DIR="runs/vaihingen_fusion/patches", LMDB_DIR="runs/vaihingen_fusion/lmdb",
        TRAIN_DIR="runs/vaihingen_fusion/train", MODEL_FILE="models/vaihingen_fusenet.pt",
        INFER_DIR="runs/vaihingen_fusion/inference",
    ),
    # ISPRS 2D Semantic Labeling, Potsdam: RGB orthophotos (5 cm) from 2_Ortho_RGB, labels from
    # 5_Labels_for_participants(_no_Boundary), unpacked into data/Potsdam.
    "potsdam": dict(
        DATA_ROOT="data/Potsdam",
        IMAGE_PATTERN="2_Ortho_RGB/top_potsdam_{id}_RGB.tif",
        GT_COLOR_PATTERN="5_Labels_for_participants/top_potsdam_{id}_label.tif",
        GT_ERODED_PATTERN="5_Labels_for_participants_no_Boundary/top_potsdam_{id}_label_noBoundary.tif",
        LABEL_PATTERN="labels/top_potsdam_{id}_label.tif",
        DSM_PATTERN="1_DSM/dsm_potsdam_{part[0]:0>2}_{part[1]:0>2}.tif",  # the DSMs number tile 2_10 02_10
        NDSM_PATTERN="",  # its 1_DSM_normalisation JPEGs are 8-bit levels, not metres
        BANDS=[1, 2, 3],
        BAND_NAMES=["R", "G", "B"],
        TRAIN_IDS=["6_10", "7_10", "2_12", "3_11", "2_10", "7_8", "5_10", "3_12", "5_12",
                   "7_11", "7_9", "6_9", "7_7", "4_12", "6_8", "6_12", "6_7", "4_11"],
        TEST_IDS=["4_10", "5_11", "2_11", "3_10", "6_11", "7_12"],
        OFFICIAL_TEST_IDS=_ISPRS_POTSDAM_TEST,
        PATCHES_DIR="runs/potsdam/patches", LMDB_DIR="runs/potsdam/lmdb",
        TRAIN_DIR="runs/potsdam/train", MODEL_FILE="models/potsdam_segnet.pt",
        INFER_DIR="runs/potsdam/inference",
        **_ISPRS_RECIPE,
    ),
}
