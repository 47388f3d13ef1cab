"""Rule summary_html: the summary as an HTML table for the report, unreliable rows marked."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import atomic_path, read_netcdf
from boltzflow.report_table import summary_html

page = summary_html(read_netcdf(snakemake.input.summary), snakemake.wildcards.system)
with atomic_path(snakemake.output[0]) as path:
    path.write_text(page, encoding="utf-8")
