"""`harness report`: run directories -> pandas tables (csv/md/tex) and paper-style figures."""
