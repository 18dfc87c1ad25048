"""The table engine of the data layer: reading (CSV, Parquet, Feather, DataFrames, NumPy files),
choosing the columns, encoding rows and targets, and splitting rows. `zerograd.data.tabular`
puts them together (`load_table_data`) and is the place to import from."""
