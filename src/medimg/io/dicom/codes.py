"""Coded concepts and display colours for the structures medimg's models label.

A DICOM-SEG segment says *what* it is with a SNOMED CT category and type code (a viewer or
PACS shows "Liver", groups and colours segments by it), not with its free-text label. The
codes come from pydicom's DICOM code dictionary (no hand-typed code values). Names are those
of the shipped models: the segmentation plans (``liver``, ``spleen``, ``kidney``; brain MR
``white_matter``, ``grey_matter``, ``csf``) and the detector's findings (``"finding <n>: ..."``,
coded as a lesion). Any other name falls back to the generic category and type SCT 85756007
"Tissue" and a colour from a fixed cycle, so distinct segments still look distinct.

Colours are our own choice of RGB (organ-like hues, distinct from each other), converted to the
CIELab ``RecommendedDisplayCIELabValue`` DICOM wants by highdicom.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

__all__ = ["GENERIC", "StructureCode", "structure_code"]


@dataclass(frozen=True)
class StructureCode:
    """Category and type code of one structure, and its display colour (RGB 0..255)."""

    category: Code
    type: Code
    rgb: tuple[int, int, int]


_ANATOMY = codes.SCT.AnatomicalStructure
_SUBSTANCE = codes.SCT.BodySubstance
_ABNORMAL = codes.SCT.MorphologicallyAbnormalStructure

#: normalised name -> code; synonyms share an entry
_KNOWN: dict[str, StructureCode] = {
    "liver": StructureCode(_ANATOMY, codes.SCT.Liver, (200, 110, 80)),
    "spleen": StructureCode(_ANATOMY, codes.SCT.Spleen, (150, 90, 170)),
    "kidney": StructureCode(_ANATOMY, codes.SCT.Kidney, (220, 180, 60)),
    "white_matter": StructureCode(_ANATOMY, codes.SCT.CerebralWhiteMatter, (240, 240, 230)),
    "grey_matter": StructureCode(_ANATOMY, codes.SCT.CerebralGrayMatter, (130, 130, 140)),
    "csf": StructureCode(_SUBSTANCE, codes.SCT.CerebrospinalFluid, (70, 150, 230)),
    "lesion": StructureCode(_ABNORMAL, codes.SCT.Lesion, (230, 50, 50)),
    "nodule": StructureCode(_ABNORMAL, codes.SCT.Nodule, (240, 120, 30)),
}
_SYNONYMS = {
    "kidneys": "kidney",
    "gray_matter": "grey_matter",
    "cerebrospinal_fluid": "csf",
    "finding": "lesion",
    "tumor": "lesion",
    "tumour": "lesion",
}
#: colours of segments with an unknown name, taken in turn by label value
_CYCLE = ((60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))
#: the stated fallback for names we have no code for
GENERIC = StructureCode(codes.SCT.Tissue, codes.SCT.Tissue, _CYCLE[0])


def _normalise(name: str) -> str:
    # "finding 3: score 0.91, 8.0 mm" -> "finding"; "Grey-Matter" -> "grey_matter"
    head = name.split(":", 1)[0].strip().lower()
    head = re.sub(r"\s+\d+$", "", head)
    return re.sub(r"[\s\-]+", "_", head)


def structure_code(name: str, label_value: int = 1) -> StructureCode:
    """The code and colour of a structure name; :data:`GENERIC` ("Tissue") if unknown.

    ``label_value`` picks the colour of an unknown name, so two unknown segments differ.
    """
    key = _normalise(name)
    key = _SYNONYMS.get(key, key)
    if key in _KNOWN:
        return _KNOWN[key]
    return StructureCode(GENERIC.category, GENERIC.type, _CYCLE[label_value % len(_CYCLE)])
