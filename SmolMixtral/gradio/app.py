"""SmolMixtral demo: `python app.py --checkpoint ../../runs/SmolMixtral-quick` (binds 127.0.0.1:7860)."""

from smolhub_hub.demo import main
from SmolMixtral.config import FAMILY

if __name__ == "__main__":
    main(FAMILY)
