-- The job store's schema as OncoAgent left it before Alembic (its own counter, schema_info, at version 5), captured
-- from commit f2506d2 (SQLAlchemy's create_all on sqlite) for tests/support/store_v5.py. Do not edit: it is history.
CREATE TABLE schema_info (
	id INTEGER NOT NULL, 
	version INTEGER NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE inputs (
	id INTEGER NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	"key" TEXT NOT NULL, 
	path TEXT NOT NULL, 
	study_uid VARCHAR(64), 
	series_uid VARCHAR(64), 
	fingerprint VARCHAR(64) NOT NULL, 
	attrs JSON NOT NULL, 
	instance_count INTEGER NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	reason TEXT, 
	created_at FLOAT NOT NULL, 
	updated_at FLOAT NOT NULL, 
	purged_at FLOAT, 
	PRIMARY KEY (id), 
	UNIQUE ("key")
);

CREATE INDEX ix_inputs_state_updated ON inputs (state, updated_at);

CREATE TABLE associations (
	id INTEGER NOT NULL, 
	started_at FLOAT NOT NULL, 
	ended_at FLOAT NOT NULL, 
	calling_ae VARCHAR(64) NOT NULL, 
	called_ae VARCHAR(64) NOT NULL, 
	address VARCHAR(64) NOT NULL, 
	refusal VARCHAR(32), 
	detail TEXT, 
	instances_stored INTEGER NOT NULL, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_associations_started ON associations (started_at);

CREATE TABLE instances (
	id INTEGER NOT NULL, 
	sop_instance_uid VARCHAR(64) NOT NULL, 
	sop_class_uid VARCHAR(64) NOT NULL, 
	study_uid VARCHAR(64) NOT NULL, 
	series_uid VARCHAR(64) NOT NULL, 
	input_id INTEGER NOT NULL, 
	path TEXT NOT NULL, 
	size BIGINT NOT NULL, 
	source TEXT NOT NULL, 
	received_at FLOAT NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (sop_instance_uid), 
	FOREIGN KEY(input_id) REFERENCES inputs (id)
);

CREATE INDEX ix_instances_series ON instances (series_uid);

CREATE TABLE jobs (
	id INTEGER NOT NULL, 
	input_id INTEGER NOT NULL, 
	pipeline VARCHAR(64) NOT NULL, 
	pipeline_version VARCHAR(32) NOT NULL, 
	input_fingerprint VARCHAR(64) NOT NULL, 
	rule VARCHAR(128), 
	status VARCHAR(16) NOT NULL, 
	priority INTEGER NOT NULL, 
	attempts INTEGER NOT NULL, 
	max_attempts INTEGER NOT NULL, 
	last_error TEXT, 
	not_before FLOAT NOT NULL, 
	created_at FLOAT NOT NULL, 
	updated_at FLOAT NOT NULL, 
	started_at FLOAT, 
	finished_at FLOAT, 
	result_path TEXT, 
	summary JSON, 
	models JSON NOT NULL, 
	unsent_reason TEXT, 
	purged_at FLOAT, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_job_effect UNIQUE (input_id, pipeline, pipeline_version, input_fingerprint), 
	FOREIGN KEY(input_id) REFERENCES inputs (id)
);

CREATE INDEX ix_jobs_claim ON jobs (status, priority, not_before, id);

CREATE TABLE events (
	id INTEGER NOT NULL, 
	at FLOAT NOT NULL, 
	job_id INTEGER, 
	input_id INTEGER, 
	event VARCHAR(32) NOT NULL, 
	detail TEXT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(job_id) REFERENCES jobs (id), 
	FOREIGN KEY(input_id) REFERENCES inputs (id)
);

CREATE INDEX ix_events_job ON events (job_id);

CREATE TABLE outbox (
	id INTEGER NOT NULL, 
	job_id INTEGER, 
	destination VARCHAR(64) NOT NULL, 
	path TEXT NOT NULL, 
	sop_class_uid VARCHAR(64) NOT NULL, 
	sop_instance_uid VARCHAR(64) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	last_status INTEGER, 
	last_error TEXT, 
	next_attempt_at FLOAT NOT NULL, 
	created_at FLOAT NOT NULL, 
	updated_at FLOAT NOT NULL, 
	sent_at FLOAT, 
	note TEXT, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_outbox_object UNIQUE (destination, sop_instance_uid), 
	FOREIGN KEY(job_id) REFERENCES jobs (id)
);

INSERT INTO schema_info (id, version) VALUES (1, 5);
