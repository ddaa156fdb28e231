"""``flowcli weights``: what weights are shipped, and official ones to download."""
from __future__ import annotations

import click

from .cli import emit_json, json_option


@click.group("weights")
def weights_group():
    """List shipped weights; download official MemFlow checkpoints (needs internet)."""


@weights_group.command("list")
@json_option
def list_cmd(as_json):
    """Show shipped weights (the default of each kind marked *) and the official names."""
    from .weights import OFFICIAL_NAMES, RELEASE_URL, cache_dir, default_name, manifest
    shipped = manifest()
    default = default_name("estimate")
    defaults = {default, default_name("predict")} - {None}
    official = []
    for name, preset in OFFICIAL_NAMES.items():
        path = cache_dir() / f"{name}.pth"
        official.append({"name": name, "preset": preset, "url": RELEASE_URL.format(file=f"{name}.pth"),
                         "downloaded": path.is_file(), "path": str(path)})
    if as_json:
        emit_json({"shipped": shipped, "default": default, "default_predict": default_name("predict"),
                   "official": official, "cache": str(cache_dir())})
        return
    click.echo("Shipped with flowcli (trained by this project on CPU; see weights/MODEL_CARD.md):")
    if not shipped:
        click.echo("  (none)")
    for e in shipped:
        mark = "*" if e["name"] in defaults else " "
        flags = "".join(word for key, word in (("coarse_to_fine", "coarse-to-fine "), ("refine", "refined "),
                                               ("tta", "tta ")) if e.get(key))
        click.echo(f" {mark} {e['name']:<22} {e.get('kind', 'estimate'):<9} iters {e.get('iters', '?'):<3} "
                   f"{flags}{e.get('description', '')}")
    click.echo(f"\nOfficial MemFlow checkpoints (`flowcli weights download NAME`; cache {cache_dir()}):")
    for o in official:
        state = "downloaded" if o["downloaded"] else "not downloaded"
        click.echo(f"   {o['name']:<22} preset {o['preset']:<7} {state:<15} {o['url']}")


# the official names, spelled here so that `--help` needs no torch import (checked against weights.py by a test)
OFFICIAL_CHOICES = ("MemFlowNet_things", "MemFlowNet_sintel", "MemFlowNet_kitti", "MemFlowNet_spring")


@weights_group.command("download")
@click.argument("name", type=click.Choice(OFFICIAL_CHOICES))
def download_cmd(name):
    """Download official checkpoint NAME into the cache and record its sha256."""
    from .weights import download_official
    path = download_official(name)
    click.echo(str(path))
