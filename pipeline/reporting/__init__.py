"""Pictures and pages drawn from the report tables: figures, the self-contained HTML reports
(templates/), and the offline web assets they and `dvc plots` use."""
