"""The format itself: schema and PNG mask codecs, class spaces, shard writer/reader, split index,
manifest, dataset card, filesystem paths and hashes, and the checks of untrusted bytes: bounds and
the one error class, PNG structure, Parquet guards (docs/FORMAT.md, section 12 for the checks).

May import: the standard library, numpy, pyarrow, fsspec, zlib-ng; nothing else of c2fmae_data.
Inside: ``bounds`` and ``categories`` are leaves; ``fs`` -> bounds; ``png_check`` -> bounds;
``png_rows`` -> png_check, categories; ``schema`` -> png_rows; ``parquet_guard`` -> bounds;
``index`` -> schema, fs, parquet_guard; ``shards`` -> index; ``manifest`` -> shards, card;
``card`` -> shards.
"""
