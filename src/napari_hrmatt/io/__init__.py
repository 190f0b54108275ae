"""Read images and trimaps as dask arrays; write alpha mattes and images block by block.

Formats, chosen by the file extension:

======================  =======  =====  ===========================================
extension               read     write  notes
======================  =======  =====  ===========================================
``.png``                yes      yes    8/16-bit grey, grey+alpha, RGB, RGBA
``.jpg``, ``.jpeg``     yes      no     lossy: never for trimaps or mattes
``.tif``, ``.tiff``     yes      yes    read lazily (level 0 of series 0); written
                                        tiled 256 x 256, zlib, BigTIFF when large
``.zarr``, ``.ome.zarr``  yes    yes    plain Zarr array or OME-Zarr; written as
                                        OME-Zarr 0.5 (Zarr v3) with a pyramid
======================  =======  =====  ===========================================

Reading returns lazy dask arrays ``(H, W)`` or ``(H, W, C)`` (channels last) in the
file's own dtype. PNG and JPEG cannot be decoded by region, so they are decoded once,
whole, into memory and wrapped; use TIFF or Zarr for images larger than memory.

Writing streams: TIFF and PNG are computed one block-row at a time and written as
the rows arrive, Zarr is written with one ``compute`` of all blocks; memory stays at
about one block-row (TIFF, PNG) or one block per worker (Zarr). Every writer writes
into a hidden sibling ``.<name>.partial-<pid>`` and renames it into place only when
complete, so an interrupted run never leaves an output that looks finished.

Modules: :mod:`.readers` (open_image, open_trimap), :mod:`.writers` (save_image,
save_alpha; TIFF and PNG streaming), :mod:`.ome` (OME-Zarr metadata, the pyramid,
the Zarr writer), :mod:`._png` (the PNG encoder), :mod:`._paths` (extensions, output
checks, atomic replacement).
"""

from ._paths import READ_EXTENSIONS, WRITE_EXTENSIONS, check_output_path
from .readers import open_image, open_trimap
from .writers import save_alpha, save_image

__all__ = [
    "READ_EXTENSIONS",
    "WRITE_EXTENSIONS",
    "check_output_path",
    "open_image",
    "open_trimap",
    "save_alpha",
    "save_image",
]
