"""The store: tables, migrations and one repository per aggregate.

The only package that imports SQLAlchemy or a database driver.
"""
