"""The initial schema: tickets, conversation, events, inbound mail, outbox and desk state.

A frozen copy of the models as they were; later changes go in later numbered files."""
from peewee import *
from maildesk.models import UtcDateTimeField

def up(migrator, db):
    class Ticket(Model):
        subject = TextField()
        requester = CharField()
        requester_name = TextField(default='')
        status = CharField(default='new')
        category = CharField(null=True)
        impact = CharField(default='medium')
        urgency = CharField(default='medium')
        priority = CharField(default='medium')
        priority_set = BooleanField(default=False)
        group = CharField(null=True)
        assignee = CharField(null=True)
        created_at = UtcDateTimeField()
        updated_at = UtcDateTimeField()
        sla_policy = CharField(null=True)
        response_due = UtcDateTimeField(null=True)
        resolution_due = UtcDateTimeField(null=True)
        first_response_at = UtcDateTimeField(null=True)
        paused_at = UtcDateTimeField(null=True)
        paused_minutes = FloatField(default=0)
        sla_next_at = UtcDateTimeField(null=True)
        resolved_at = UtcDateTimeField(null=True)
        closed_at = UtcDateTimeField(null=True)
        closure_code = CharField(null=True)
        resolution = TextField(null=True)
        reopen_count = IntegerField(default=0)
        escalation_count = IntegerField(default=0)
        is_major = BooleanField(default=False)
        parent = ForeignKeyField('self', null=True, on_delete='SET NULL')
        follows = ForeignKeyField('self', null=True, on_delete='SET NULL')
        thread_root = TextField(null=True)
        class Meta:
            database = db
            table_name = 'ticket'
            indexes = ((('sla_next_at',), False), (('status', 'created_at'), False))
    db.create_tables([Ticket])

    class Inbound(Model):
        mailbox = CharField(default='INBOX')
        uidvalidity = IntegerField(null=True)
        uid = IntegerField(null=True)
        sha256 = CharField(unique=True)
        size = IntegerField(default=0)
        message_id = TextField(index=True, null=True)
        from_addr = TextField(default='')
        subject = TextField(default='')
        received_at = UtcDateTimeField()
        status = CharField(index=True, default='pending')
        outcome = CharField(null=True)
        error = TextField(null=True)
        ticket = ForeignKeyField(Ticket, null=True, on_delete='SET NULL')
        decisions = TextField(default='')
        processed_at = UtcDateTimeField(null=True)
        server_done = BooleanField(default=False)
        class Meta:
            database = db
            table_name = 'inbound'
            indexes = ((('server_done', 'mailbox'), False),)
    db.create_tables([Inbound])

    class Message(Model):
        ticket = ForeignKeyField(Ticket, on_delete='CASCADE')
        inbound = ForeignKeyField(Inbound, null=True, on_delete='SET NULL')
        direction = CharField()
        message_id = TextField(index=True, null=True)
        from_addr = TextField(default='')
        from_name = TextField(default='')
        to = TextField(default='')
        cc = TextField(default='')
        subject = TextField(default='')
        body = TextField(default='')
        html = TextField(null=True)
        internal = BooleanField(default=False)
        kind = CharField(default='mail')
        created_at = UtcDateTimeField()
        class Meta:
            database = db
            table_name = 'message'
    db.create_tables([Message])

    class Attachment(Model):
        message = ForeignKeyField(Message, on_delete='CASCADE')
        filename = TextField()
        content_type = CharField()
        size = IntegerField()
        sha256 = CharField(index=True)
        class Meta:
            database = db
            table_name = 'attachment'
    db.create_tables([Attachment])

    class Blob(Model):
        sha256 = CharField(primary_key=True)
        data = BlobField()
        class Meta:
            database = db
            table_name = 'blob'
    db.create_tables([Blob])

    class Event(Model):
        ticket = ForeignKeyField(Ticket, on_delete='CASCADE')
        at = UtcDateTimeField()
        actor = CharField()
        kind = CharField()
        detail = TextField(default='')
        inbound = ForeignKeyField(Inbound, null=True, on_delete='SET NULL')
        class Meta:
            database = db
            table_name = 'event'
            indexes = ((('ticket', 'kind'), False),)
    db.create_tables([Event])

    class InboundRaw(Model):
        inbound = ForeignKeyField(Inbound, primary_key=True, on_delete='CASCADE')
        data = BlobField()
        summary = TextField(null=True)
        class Meta:
            database = db
            table_name = 'inbound_raw'
    db.create_tables([InboundRaw])

    class MailboxState(Model):
        mailbox = CharField(primary_key=True)
        uidvalidity = IntegerField(null=True)
        last_uid = IntegerField(default=0)
        last_success_at = UtcDateTimeField(null=True)
        stall_alerted = BooleanField(default=False)
        class Meta:
            database = db
            table_name = 'mailbox_state'
    db.create_tables([MailboxState])

    class Outbox(Model):
        ticket = ForeignKeyField(Ticket, null=True, on_delete='SET NULL')
        kind = CharField()
        automatic = BooleanField(default=False)
        rcpt = CharField()
        message_id = TextField(index=True)
        subject = TextField(default='')
        rcpt_name = TextField(default='')
        from_name = TextField(default='')
        context = TextField(default='{}')
        status = CharField(default='queued')
        attempts = IntegerField(default=0)
        next_attempt_at = UtcDateTimeField(null=True)
        last_error = TextField(null=True)
        created_at = UtcDateTimeField()
        sent_at = UtcDateTimeField(null=True)
        inbound = ForeignKeyField(Inbound, null=True, on_delete='SET NULL')
        class Meta:
            database = db
            table_name = 'outbox'
            indexes = ((('status', 'next_attempt_at'), False), (('rcpt', 'created_at'), False))
    db.create_tables([Outbox])

    class Participant(Model):
        ticket = ForeignKeyField(Ticket, on_delete='CASCADE')
        email = CharField()
        role = CharField()
        class Meta:
            database = db
            table_name = 'participant'
            indexes = ((('ticket', 'email'), True),)
    db.create_tables([Participant])

    class Setting(Model):
        key = CharField(primary_key=True)
        value = TextField()
        class Meta:
            database = db
            table_name = 'setting'
    db.create_tables([Setting])

    class SlaMark(Model):
        ticket = ForeignKeyField(Ticket, on_delete='CASCADE')
        target = CharField()
        level = CharField()
        fired_at = UtcDateTimeField()
        class Meta:
            database = db
            table_name = 'sla_mark'
            indexes = ((('ticket', 'target', 'level'), True),)
    db.create_tables([SlaMark])

    class StaffState(Model):
        email = CharField(primary_key=True)
        away_until = UtcDateTimeField(null=True)
        last_assigned_at = UtcDateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'staff_state'
    db.create_tables([StaffState])

    class Suppression(Model):
        email = CharField(primary_key=True)
        reason = CharField()
        detail = TextField(default='')
        until = UtcDateTimeField()
        created_at = UtcDateTimeField()
        outbox = ForeignKeyField(Outbox, null=True, on_delete='SET NULL')
        class Meta:
            database = db
            table_name = 'suppression'
    db.create_tables([Suppression])

    class Survey(Model):
        ticket = ForeignKeyField(Ticket, unique=True, on_delete='CASCADE')
        requester = CharField(index=True)
        sent_at = UtcDateTimeField()
        rating = IntegerField(null=True)
        comment = TextField(null=True)
        answered_at = UtcDateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'survey'
    db.create_tables([Survey])

    class Task(Model):
        ticket = ForeignKeyField(Ticket, on_delete='CASCADE')
        number = IntegerField()
        title = TextField()
        assignee = CharField(null=True)
        done = BooleanField(default=False)
        created_at = UtcDateTimeField()
        done_at = UtcDateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'task'
            indexes = ((('ticket', 'number'), True),)
    db.create_tables([Task])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('task'))
    migrator.migrate(migrator.drop_table('survey'))
    migrator.migrate(migrator.drop_table('suppression'))
    migrator.migrate(migrator.drop_table('staff_state'))
    migrator.migrate(migrator.drop_table('sla_mark'))
    migrator.migrate(migrator.drop_table('setting'))
    migrator.migrate(migrator.drop_table('participant'))
    migrator.migrate(migrator.drop_table('outbox'))
    migrator.migrate(migrator.drop_table('mailbox_state'))
    migrator.migrate(migrator.drop_table('inbound_raw'))
    migrator.migrate(migrator.drop_table('event'))
    migrator.migrate(migrator.drop_table('blob'))
    migrator.migrate(migrator.drop_table('attachment'))
    migrator.migrate(migrator.drop_table('message'))
    migrator.migrate(migrator.drop_table('inbound'))
    migrator.migrate(migrator.drop_table('ticket'))
