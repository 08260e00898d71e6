"""Print parameters and multiply-adds of every named variant at its native resolution.

    python examples/profile_variants.py
"""

from functools import partial

import effnet_tl
from effnet_tl.models.profile import format_variant_table, variant_table


def main():
    builders = {name: partial(effnet_tl.backbone, name, include_top=True)
                for name in effnet_tl.VARIANTS}
    print(format_variant_table(variant_table(builders)))


if __name__ == "__main__":
    main()
