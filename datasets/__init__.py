"""HDF5 datasets: schema, episode recorder, reader, curation and export tools."""
