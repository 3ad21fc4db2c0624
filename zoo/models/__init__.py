from zoo.models.image import titok  # noqa: F401
from zoo.models.image import onedpiece  # noqa: F401
from zoo.models.image import flextok  # noqa: F401
from zoo.models.audio import speechtokenizer  # noqa: F401
from zoo.models.audio import dmcodec  # noqa: F401
from zoo.models.audio import fusecodec  # noqa: F401
from zoo.models.audio import wavtokenizer  # noqa: F401
from zoo.models.audio import lmspt  # noqa: F401
