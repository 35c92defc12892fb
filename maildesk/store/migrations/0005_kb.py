"""The knowledge base (issue 16): articles and their versions, the articles offered in
acknowledgements, and the full-text indexes of articles and resolved tickets with
the document counts of their terms.

A frozen copy of the models as they were; later changes go in later numbered files.
The full-text indexes are the database's own: FTS5 tables on SQLite, tables of
`tsvector` with a GIN index on PostgreSQL. They are created empty; `maildesk init`
fills them (maildesk/desk/kbsearch.py `reindex`) and records how in the setting
`kb_index`."""
from peewee import *
from maildesk.models import UtcDateTimeField


def up(migrator, db):
    class Ticket(Model):
        class Meta:
            database = db
            table_name = 'ticket'

    class KbArticle(Model):
        title = TextField()
        text = TextField()
        category = CharField(null=True)
        ticket = ForeignKeyField(Ticket, null=True, on_delete='SET NULL', index=True)
        version = IntegerField(default=1)
        retired = BooleanField(default=False)
        retired_at = UtcDateTimeField(null=True)
        use_count = IntegerField(default=0)
        key_terms = TextField(default='')
        created_at = UtcDateTimeField()
        updated_at = UtcDateTimeField()
        created_by = CharField(default='')
        updated_by = CharField(default='')
        class Meta:
            database = db
            table_name = 'kb_article'
    db.create_tables([KbArticle])

    class KbVersion(Model):
        article = ForeignKeyField(KbArticle, on_delete='CASCADE')
        version = IntegerField()
        title = TextField()
        text = TextField()
        category = CharField(null=True)
        created_at = UtcDateTimeField()
        created_by = CharField(default='')
        class Meta:
            database = db
            table_name = 'kb_version'
            indexes = ((('article', 'version'), True),)
    db.create_tables([KbVersion])

    class KbOffer(Model):
        ticket = ForeignKeyField(Ticket, on_delete='CASCADE')
        article = ForeignKeyField(KbArticle, on_delete='CASCADE', index=True)
        rcpt = CharField()
        score = FloatField(default=0)
        offered_at = UtcDateTimeField()
        taken_at = UtcDateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'kb_offer'
            indexes = ((('ticket', 'article'), True),)
    db.create_tables([KbOffer])

    class KbTerm(Model):
        term = CharField(primary_key=True)
        docs = IntegerField(default=0)
        class Meta:
            database = db
            table_name = 'kb_term'

    class TicketTerm(Model):
        term = CharField(primary_key=True)
        docs = IntegerField(default=0)
        class Meta:
            database = db
            table_name = 'ticket_term'
    db.create_tables([KbTerm, TicketTerm])

    # the full-text indexes, empty: `maildesk init` fills them (desk/kbsearch.py reindex)
    if isinstance(db, SqliteDatabase):
        tokenizer = "porter unicode61 remove_diacritics 2"
        db.execute_sql(f"CREATE VIRTUAL TABLE kb_fts USING fts5(title, text, category, tokenize='{tokenizer}')")
        db.execute_sql("CREATE VIRTUAL TABLE ticket_fts USING fts5(subject, problem, resolution, category, "
                       f"tokenize='{tokenizer}')")
    else:
        db.execute_sql("CREATE TABLE kb_fts (article_id integer PRIMARY KEY REFERENCES kb_article (id) ON DELETE CASCADE, "
                       "language text NOT NULL, vector tsvector NOT NULL)")
        db.execute_sql("CREATE INDEX kb_fts_vector ON kb_fts USING GIN (vector)")
        db.execute_sql("CREATE TABLE ticket_fts (ticket_id integer PRIMARY KEY REFERENCES ticket (id) ON DELETE CASCADE, "
                       "language text NOT NULL, vector tsvector NOT NULL)")
        db.execute_sql("CREATE INDEX ticket_fts_vector ON ticket_fts USING GIN (vector)")


def down(migrator, db):
    db.execute_sql("DELETE FROM setting WHERE key = 'kb_index'")
    db.execute_sql("DROP TABLE IF EXISTS ticket_fts")
    db.execute_sql("DROP TABLE IF EXISTS kb_fts")
    migrator.migrate(migrator.drop_table('ticket_term'))
    migrator.migrate(migrator.drop_table('kb_term'))
    migrator.migrate(migrator.drop_table('kb_offer'))
    migrator.migrate(migrator.drop_table('kb_version'))
    migrator.migrate(migrator.drop_table('kb_article'))
