from setuptools import find_packages, setup

setup(
    name="kerasbert",
    version="0.1.0",
    description="BERT in Keras 3: multitask fine-tuning (CS224N minBERT) and text-in TFLite export",
    packages=find_packages(include=["kerasbert*", "training*", "export*"]),
    python_requires=">=3.10,<3.14",
    install_requires=[
        "tensorflow==2.21.*",
        "tensorflow-text==2.21.*",
        "keras>=3.15",
        "numpy",
        "scipy",
        "scikit-learn",
        "safetensors",
        "ai-edge-litert",
        # lite/: the TensorFlow-free scorer and tokenizer the exports are read with.
        # Installed from ./lite with this package (`make setup`).
        "kerasbert-lite",
        "huggingface_hub",
        "tqdm",
        "matplotlib",
        "tensorboard",
    ],
    extras_require={
        # The reference stack for parity tests. Install torch==2.13.0 first
        # (the Makefile does): a bare `torch` would pull a CUDA build.
        "test": [
            "pytest",
            "torch==2.13.0",
            "transformers>=5",
            # MediaPipe's own TextEmbedder / TextClassifier run the device files.
            "mediapipe==1.2.*",
            "nbclient",
            "nbformat",
            "ipykernel",
        ],
    },
)
