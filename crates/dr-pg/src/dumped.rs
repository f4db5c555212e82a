//! Which tables' rows pg_dump copies: one definition for the counts (`snapshot`), the split
//! into streams (`split`) and the rows a restore copies (`copy`), which must name the same
//! tables.

/// The `where` of the tables whose data pg_dump copies, over `pg_class c` and its
/// `pg_namespace n`: ordinary tables (partitions included, partitioned parents hold no rows)
/// outside system schemas, not owned by an extension.
macro_rules! dumped_tables_where {
    () => {
        "
where c.relkind = 'r'
  and n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp\\_%'
  and not exists (select 1 from pg_depend d
                  where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e')
"
    };
}
pub(crate) use dumped_tables_where;
