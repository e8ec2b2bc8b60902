"""Output formats: DICOM SR/SEG/annotations, HTML/PDF documents, figures.

Entry point: :func:`reports.render.write_reports`, called by :func:`agent.results.execute` after a pipeline
ran. Modules, one concept each: ``uids`` (deterministic output UIDs), ``codes`` (coded concepts), ``findings``
(typed views of result.json), ``context`` (patient/study context), ``producer`` (who made a result), ``sr``
(TID 1500 Comprehensive 3D SR and its Comprehensive SR fallback), ``seg`` (lesion Segmentation),
``annotations`` (Microscopy Bulk Simple Annotations), ``capture`` (slide overview as Secondary Capture),
``encapsulated`` (PDF as Encapsulated PDF), ``sources`` (reading slides and MR volumes for figures),
``figures`` (PNG figures), ``document`` with ``templates/`` (HTML and PDF), ``verified`` (a reviewer's
sign-off: the corrected findings as a verified SR and the signed report, for :mod:`agent.signoff`),
``validation_mark`` (the "model not validated at this site" line on every output).
"""
