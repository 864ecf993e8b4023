from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="ternaus_zoo",
    version="0.1.0",
    description="Segmentation and classification models, losses and Lightning recipes from Kaggle and MICCAI winners",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",  # zarr 3 (and tifffile since 2025.5.21) need it
    packages=find_packages(include=["ternaus_zoo", "ternaus_zoo.*"]),
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "segmentation-models-pytorch>=0.3.3",
        "albumentations>=2.0.8,<3",
        # albumentations already depends on the headless build; opencv-python beside it would install a second cv2
        "opencv-python-headless>=4.8",
        # GIF and palette PNG masks (data/formats/pillow.py): OpenCV reads no GIF before 4.11 and expands palettes
        "Pillow>=9.1",
        # multi-page, multi-channel and planar TIFF (ternaus_zoo.data.formats.tiff); pure Python, needs only numpy;
        # 2025.5.21 reads windows of a large TIFF through zarr 3 (ternaus_zoo.data.windows, tiled prediction)
        "tifffile>=2025.5.21",
        # the chunk store behind those windows: only the tiles under a window are decoded (needs Python >= 3.11)
        "zarr>=3",
        "pytorch-lightning>=2.2",
        "torchmetrics>=1.2",
        "jsonargparse[signatures]>=4.27",
        "tensorboard>=2.14",
        "numpy>=1.24",
        "tqdm",
        "matplotlib",
        # weights of saved model folders (save_pretrained / from_pretrained): no pickle
        "safetensors>=0.4",
        # skeletons of the masks' structures (ternaus_zoo.planning: the structure width of the fingerprint)
        "scikit-image>=0.19",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-timeout",
            "ruff",
            # the original TernausNet, used as the oracle for UNet11/UNet16
            "ternausnet==0.0.1",
            "onnx",
            "onnxruntime",
            # the default (dynamo) ONNX exporter; the export tests fail instead of falling back without it
            "onnxscript",
            "nbclient",
            "ipykernel",
            "pycocotools",
        ],
        "notebooks": ["jupyter", "nbclient", "nbconvert", "ipykernel"],
        # export --format onnx (its metadata, its check) and OnnxPredictor
        "onnx": ["onnx", "onnxruntime", "onnxscript"],
        # from_pretrained("user/name"): hub repositories
        "hub": ["huggingface_hub>=0.20"],
        # masks given as a COCO annotation file (polygons, RLE)
        "coco": ["pycocotools"],
        # TIFF compressions tifffile decodes only with it (LZW, JPEG, zstd...) in files OpenCV cannot read
        # either (more than 4 channels, planar channels); a 26 MB wheel, hence optional
        "tiff": ["imagecodecs"],
    },
    entry_points={
        "console_scripts": [
            "ternaus-zoo=ternaus_zoo.cli:main",
            "ternaus-zoo-cls=ternaus_zoo.cli:classification_alias",
        ]
    },
)
