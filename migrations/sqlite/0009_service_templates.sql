-- Deployable catalog templates (issue #14). template is the entry's
-- minispod.v1.ServiceTemplate, prost-encoded; NULL for an entry without one
-- (listed, not deployable). With a template, image, port, the resource
-- columns and env_template are derived from it on every write.
ALTER TABLE services ADD COLUMN template BLOB;
