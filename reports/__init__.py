"""Output formats: DICOM SR/SEG/annotations, HTML/PDF documents, figures."""
