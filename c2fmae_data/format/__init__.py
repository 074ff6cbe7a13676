"""The format itself: schema and PNG mask codecs, class spaces, shard writer/reader, split index,
manifest, dataset card, filesystem paths and hashes (docs/FORMAT.md).

May import: the standard library, numpy, pyarrow, fsspec, zlib-ng; nothing else of c2fmae_data.
Inside: ``categories`` and ``fs`` are leaves; ``schema`` -> categories; ``index`` -> schema, fs;
``shards`` -> index; ``manifest`` -> shards, card; ``card`` -> shards; ``png_rows`` -> schema.
"""
