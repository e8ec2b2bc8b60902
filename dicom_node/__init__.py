"""DICOM networking: C-STORE SCP, series assembly, SCU outbox."""
