"""Every personalisation method module; importing this fills the registry of :mod:`.method`."""

from lthash.generate.personalize import base, attndreambooth, dreambooth, textual_inversion, joint  # noqa: F401
