"""The MRI tumour pipeline: series → volume → U-Net lesions → radiomics → GA-tuned SVM malignancy.

Modules: :mod:`.volume` (DICOM series to a SimpleITK volume), :mod:`.segmentation` (MONAI U-Net, lesions),
:mod:`.radiomics` (pyradiomics feature vectors), :mod:`.classifier` (scikit-learn model and its genetic
tuning), :mod:`.training` (segmenter and classifier training with metrics, plots and a model card),
:mod:`.pipeline` (``mri-tumour`` for the executor) and :mod:`.train_cli` (``oncoagent train``).
"""
